package etcd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func testConfig(t *testing.T, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"default with dir", func(c *Config) {}, ""},
		{"no dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"no name", func(c *Config) { c.Name = "" }, "name"},
		{"public client url", func(c *Config) { c.ClientURL = "http://0.0.0.0:2379" }, "loopback"},
		{"hostname client url", func(c *Config) { c.ClientURL = "http://example.com:2379" }, "loopback"},
		{"https client url", func(c *Config) { c.ClientURL = "https://127.0.0.1:0" }, "scheme"},
		{"no port", func(c *Config) { c.ClientURL = "http://127.0.0.1" }, "127.0.0.1"},
		{"localhost ok", func(c *Config) { c.ClientURL = "http://localhost:0" }, ""},
		{"ipv6 loopback ok", func(c *Config) { c.ClientURL = "http://[::1]:0" }, ""},
		{"negative quota", func(c *Config) { c.QuotaBackendBytes = -1 }, "quota"},
		{"both compactions", func(c *Config) { c.AutoCompaction = Compaction{Revisions: 10, Period: time.Hour} }, "not both"},
		{"short period", func(c *Config) { c.AutoCompaction = Compaction{Period: time.Second} }, "one minute"},
		{"period ok", func(c *Config) { c.AutoCompaction = Compaction{Period: time.Hour} }, ""},
		{"compaction off ok", func(c *Config) { c.AutoCompaction = Compaction{} }, ""},
		{"election too short", func(c *Config) { c.ElectionTimeout = 20 * time.Millisecond }, "election"},
		{"no ready timeout", func(c *Config) { c.ReadyTimeout = 0 }, "ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DataDir = "/var/lib/trellis/etcd"
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

func TestClientConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*ClientConfig)
		want   string
	}{
		{"ok", func(c *ClientConfig) {}, ""},
		{"no endpoints", func(c *ClientConfig) { c.Endpoints = nil }, "endpoint"},
		{"bad scheme", func(c *ClientConfig) { c.Endpoints = []string{"ftp://x:1"} }, "scheme"},
		{"no host", func(c *ClientConfig) { c.Endpoints = []string{"https://"} }, "no host"},
		{"cert without key", func(c *ClientConfig) { c.CertFile = "c.pem" }, "together"},
		{"no dial timeout", func(c *ClientConfig) { c.DialTimeout = 0 }, "dial timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultClientConfig()
			cfg.Endpoints = []string{"https://10.0.0.5:2379"}
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestEmbeddedRestartKeepsData writes through the embedded member, stops it, starts it again
// on the same data dir and reads the value back.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "etcd")

	e, err := StartEmbedded(ctx, testConfig(t, dir), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	eps := e.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one", eps)
	}
	u, err := url.Parse(eps[0])
	if err != nil {
		t.Fatal(err)
	}
	if host, port, _ := net.SplitHostPort(u.Host); host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("endpoint %s: want 127.0.0.1 with a real port", eps[0])
	}
	put, err := e.Client().Put(ctx, "/k", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil { // second call must neither panic nor fail
		t.Fatal(err)
	}

	e2, err := StartEmbedded(ctx, testConfig(t, dir), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Close() })
	got, err := e2.Client().Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v1" || got.Kvs[0].ModRevision != put.Header.Revision {
		t.Fatalf("after restart Get(/k) = %v, want v1 at revision %d", got.Kvs, put.Header.Revision)
	}
}

func TestStartEmbeddedRefusesBadConfig(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ClientURL = "http://0.0.0.0:0"
	if _, err := StartEmbedded(context.Background(), cfg, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("StartEmbedded(public url) = %v, want ErrInvalidConfig", err)
	}
}

func TestStartEmbeddedCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, err := StartEmbedded(ctx, testConfig(t, t.TempDir()), nil)
	if err == nil {
		// The member may have been ready before the select saw ctx; that is allowed.
		e.Close()
		return
	}
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.Canceled) {
		t.Fatalf("StartEmbedded(cancelled) = %v, want ErrNotReady wrapping context.Canceled", err)
	}
}

// TestNewClientTLS runs a TLS-only etcd member with client-certificate authentication and
// checks that NewClient connects with the right files and fails without a client certificate.
func TestNewClientTLS(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()

	ec := embed.NewConfig()
	ec.Dir = filepath.Join(dir, "data")
	ec.Name = "tls"
	lcurl, _ := url.Parse("https://127.0.0.1:0")
	ec.ListenClientUrls = []url.URL{*lcurl}
	ec.AdvertiseClientUrls = []url.URL{*lcurl}
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.TickMs, ec.ElectionMs = 10, 100
	ec.EnableGRPCGateway = false
	ec.ClientTLSInfo.CertFile = pki.serverCert
	ec.ClientTLSInfo.KeyFile = pki.serverKey
	ec.ClientTLSInfo.TrustedCAFile = pki.ca
	ec.ClientTLSInfo.ClientCertAuth = true
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(testLogger(t), slog.LevelError, nil))
	srv, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("TLS etcd not ready")
	}
	endpoint := "https://" + srv.Clients[0].Addr().String()

	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr bool
	}{
		{"ca and client cert", ClientConfig{Endpoints: []string{endpoint}, CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, DialTimeout: 5 * time.Second}, false},
		{"no client cert", ClientConfig{Endpoints: []string{endpoint}, CAFile: pki.ca, DialTimeout: 5 * time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = c.Put(ctx, "/tls", "ok")
			if (err != nil) != tt.wantErr {
				t.Fatalf("Put over TLS: err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}

	t.Run("missing files", func(t *testing.T) {
		_, err := NewClient(ClientConfig{Endpoints: []string{endpoint}, CAFile: filepath.Join(dir, "nope.pem"), DialTimeout: time.Second})
		if err == nil {
			t.Fatal("NewClient with a missing CA file succeeded")
		}
	})
}
