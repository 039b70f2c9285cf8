package isolationlinux

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/network"
	"github.com/trellis-run/trellis/isolation_linux/resources"
)

// testBase holds everything the tests make: a directory others can traverse (container root
// must reach the overlay directories by path), with the busybox stack and one layer cache
// shared by all tests of this binary.
var testBase string

func TestMain(m *testing.M) {
	MaybeRunInit()
	if cfgPath := os.Getenv(oomAgentEnv); cfgPath != "" {
		os.Exit(runOOMAgent(cfgPath))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "isolation_linux tests need root; running only the pure ones")
		return m.Run()
	}
	base, err := os.MkdirTemp("", "trellis-isolation-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// As on a systemd host, mounts under the state and disk dirs propagate, so the pool of
	// container inits is in use (initpool_linux.go).
	unshare, err := ShareMount(base)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer unshare()
	if err := BuildBusyboxStack(filepath.Join(base, "busybox"), ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testBase = base
	defer uninstallTestNetwork()
	return m.Run()
}

var testSeq atomic.Int64

// testNetwork is the one network configuration of this test process: one bridge, subnet and
// lease directory shared by every backend (Networks sharing a state dir need one Config),
// removed when the tests end.
func testNetwork() network.Config {
	cfg := network.DefaultConfig()
	cfg.StateDir = filepath.Join(testBase, "net")
	cfg.BridgeName = fmt.Sprintf("trt%d", os.Getpid())
	cfg.NetworkName = fmt.Sprintf("trellis-test-%d", os.Getpid())
	cfg.Subnet = fmt.Sprintf("10.%d.%d.0/24", 200+os.Getpid()%50, os.Getpid()%250)
	return cfg
}

// uninstallTestNetwork removes the test network's bridge and iptables chains once every test
// has destroyed its containers, so test runs leave no rules on the host.
func uninstallTestNetwork() {
	n, err := network.New(testNetwork())
	if err == nil {
		err = n.Uninstall(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "uninstall the test network:", err)
	}
}

// testConfig returns a Config whose state, disk, network and cgroup names are unique to this
// test and process, so parallel runs on the machine do not collide.
func testConfig(t *testing.T) Config {
	t.Helper()
	if testBase == "" {
		t.Skip("needs root")
	}
	n := testSeq.Add(1)
	dir := filepath.Join(testBase, fmt.Sprintf("t%d", n))
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.DiskDir = filepath.Join(dir, "disk")
	cfg.LayerCacheDir = filepath.Join(testBase, "layers")
	cfg.Stacks = map[string]string{"busybox": filepath.Join(testBase, "busybox")}
	cfg.CgroupParent = fmt.Sprintf("trellis-test-%d-%d", os.Getpid(), n)
	cfg.Network = testNetwork()
	return cfg
}

func newTestBackend(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		all, _ := b.List(context.Background(), nil)
		for _, c := range all {
			if err := b.Destroy(context.Background(), c.Handle()); err != nil {
				t.Errorf("cleanup: Destroy(%s): %v", c.Handle(), err)
			}
		}
		b.Close()
		if err := resources.RemoveTree(cfg.CgroupParent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func handleFor(t *testing.T) string {
	return fmt.Sprintf("h%d-%d", os.Getpid(), testSeq.Add(1))
}

func createContainer(t *testing.T, b *Backend, mutate func(*isolation.ContainerSpec)) isolation.Container {
	t.Helper()
	spec := isolation.ContainerSpec{Handle: handleFor(t), RootFS: "preloaded:busybox", Network: isolation.NetworkNone}
	if mutate != nil {
		mutate(&spec)
	}
	c, err := b.Create(context.Background(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return c
}

type result struct {
	stdout, stderr string
	code           int
}

// sh runs script with busybox sh in c and waits for it.
func sh(t *testing.T, c isolation.Container, user, script string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/bin/sh", Args: []string{"-c", script}, User: user}, isolation.ProcessIO{Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("Run(%q): %v", script, err)
	}
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait(%q): %v", script, err)
	}
	return result{out.String(), errOut.String(), code}
}
