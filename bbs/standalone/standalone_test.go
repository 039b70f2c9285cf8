package standalone

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/store"
)

func start(t *testing.T, dir string) *BBS {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Server.ListenAddress = "127.0.0.1:0"
	cfg.Server.Insecure = true
	b, err := Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return b
}

func TestStartServesAndKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b := start(t, dir)
	c, err := client.New(client.Config{URL: b.URL(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.UpsertDomain(ctx, "d", 0); err != nil {
		t.Fatalf("UpsertDomain: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	b = start(t, dir)
	defer b.Close()
	c, err = client.New(client.Config{URL: b.URL(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	domains, err := c.Domains(ctx)
	if err != nil || len(domains) != 1 || domains[0].Name != "d" {
		t.Fatalf("Domains after restart = %v, %v; want [d]", domains, err)
	}
	if _, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{}); err != nil {
		t.Fatalf("ActualLRPs: %v", err)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Fatal("no data dir and no etcd endpoints accepted")
	}
	cfg.DataDir = filepath.Join(t.TempDir(), "x")
	cfg.Server.Insecure = true
	cfg.Server.ListenAddress = "0.0.0.0:0"
	if err := cfg.Validate(); err == nil {
		t.Fatal("insecure on a non-loopback address accepted")
	}
	cfg.Server.ListenAddress = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, n := range []int{-1, 65} {
		cfg.EtcdConnections = n
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "etcd connections") {
			t.Errorf("%d etcd connections: %v, want ErrInvalidConfig naming them", n, err)
		}
	}
}
