package bbs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/etcd"
	"github.com/trellis-run/trellis/bbs/store"
)

// One embedded etcd serves the whole test binary; each test gets its own key prefix, so tests
// share nothing but the process.
var (
	etcdOnce   sync.Once
	etcdMember *etcd.Embedded
	etcdDir    string
	etcdErr    error
	prefixSeq  atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdMember != nil {
		etcdMember.Close()
		os.RemoveAll(etcdDir)
	}
	os.Exit(code)
}

func sharedEtcd(t testing.TB) *etcd.Embedded {
	t.Helper()
	etcdOnce.Do(func() {
		etcdDir, etcdErr = os.MkdirTemp("", "bbs-test-etcd-")
		if etcdErr != nil {
			return
		}
		cfg := etcd.DefaultConfig()
		cfg.DataDir = etcdDir
		cfg.AutoCompaction = etcd.Compaction{} // tests compact by hand
		etcdMember, etcdErr = etcd.StartEmbedded(context.Background(), cfg, nil)
	})
	if etcdErr != nil {
		t.Fatalf("embedded etcd: %v", etcdErr)
	}
	return etcdMember
}

// newStore returns a real store on the shared etcd under a prefix of its own.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	e := sharedEtcd(t)
	return store.New(e.Client(), store.Options{Prefix: fmt.Sprintf("/bbs-test-%d/", prefixSeq.Add(1))})
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// pkiCache shares one dev PKI between the tests of the binary (issuing is cheap, but one CA
// keeps failures readable).
var (
	pkiOnce sync.Once
	pki     *certs.DevPKI
	pkiDir  string
	pkiErr  error
)

func devPKI(t testing.TB) *certs.DevPKI {
	t.Helper()
	pkiOnce.Do(func() {
		pkiDir, pkiErr = os.MkdirTemp("", "bbs-test-pki-")
		if pkiErr == nil {
			pki, pkiErr = certs.EnsureDevPKI(pkiDir, nil)
		}
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pki
}

// env is one BBS over mTLS on a real store.
type env struct {
	t      testing.TB
	pki    *certs.DevPKI
	store  *store.Store
	server *bbs.Server
	url    string
	conns  *trackingListener
}

// newEnv starts a TLS server on loopback over a fresh store; modify adjusts the config.
func newEnv(t testing.TB, modify func(*bbs.Config)) *env {
	t.Helper()
	p := devPKI(t)
	st := newStore(t)
	cfg := bbs.DefaultConfig()
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.TLS = bbs.TLSConfig{CAFile: p.CAFile, CertFile: p.Server.CertFile, KeyFile: p.Server.KeyFile}
	if modify != nil {
		modify(&cfg)
	}
	srv, err := bbs.NewServer(cfg, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, tl) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after shutdown")
		}
	})
	<-srv.Ready()
	scheme := "https"
	if cfg.Insecure {
		scheme = "http"
	}
	return &env{t: t, pki: p, store: st, server: srv, url: scheme + "://" + srv.Addr().String(), conns: tl}
}

// client returns a client holding the certificate of id ("operator", "brain", "cell:x").
func (e *env) client(id string) *client.Client {
	e.t.Helper()
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		e.t.Fatal(err)
	}
	files := e.pki.ClientFiles(ident)
	if ident.Role == certs.RoleCell {
		if files, err = e.pki.IssueCell(ident.CellID); err != nil {
			e.t.Fatal(err)
		}
	}
	c, err := client.New(client.Config{
		URL: e.url, CAFile: e.pki.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile,
		Timeout: 10 * time.Second, ReconnectDelay: 20 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// trackingListener remembers accepted connections so a test can cut them all (a network drop).
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// dropNext waits until at least one connection was accepted since the last drop (the client
// reconnected), then closes them all.
func (l *trackingListener) dropNext(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if n := l.dropAll(); n > 0 {
			return n
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("no connection to drop: the client did not reconnect")
	return 0
}

// dropAll closes every connection accepted so far and reports how many it closed.
func (l *trackingListener) dropAll() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.conns)
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
	return n
}

// contains reports whether s contains every one of subs.
func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func storeTaskFilter() store.TaskFilter { return store.TaskFilter{} }
