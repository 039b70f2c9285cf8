package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation/isolationtest"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
	"github.com/trellis-run/trellis/isolation_linux/image"
)

// childConfigEnv makes the test binary run an agent (Serve) from the config file it names
// instead of the tests, so that tests can SIGKILL a real agent process.
const childConfigEnv = "TRELLIS_AGENT_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	// Containers of the Linux backend re-execute this binary as their init.
	isolationlinux.MaybeRunInit()
	if path := os.Getenv(childConfigEnv); path != "" {
		os.Exit(runChildAgent(path))
	}
	code := m.Run()
	if shared != nil {
		shared.bbs.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// runChildAgent is the agent process of the restart tests.
func runChildAgent(path string) int {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := Serve(ctx, cfg, logger); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// bbsEnv is one real BBS (embedded etcd, mTLS) shared by the tests of this binary; tests use
// cell ids and process guids of their own.
type bbsEnv struct {
	bbs *standalone.BBS
	pki *certs.DevPKI
	dir string
}

var (
	shared     *bbsEnv
	sharedOnce sync.Once
	sharedErr  error
	seq        atomic.Int64
	backendSeq atomic.Int64
)

func testBBS(t *testing.T) *bbsEnv {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trellis-agent-test-")
		if err != nil {
			sharedErr = err
			return
		}
		os.Chmod(dir, 0o711)
		pki, err := certs.EnsureDevPKI(filepath.Join(dir, "pki"), nil)
		if err != nil {
			sharedErr = err
			return
		}
		cfg := standalone.DefaultConfig()
		cfg.DataDir = filepath.Join(dir, "bbs")
		cfg.Server.ListenAddress = "127.0.0.1:0"
		cfg.Server.TLS.CAFile = pki.CAFile
		cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = pki.Server.CertFile, pki.Server.KeyFile
		cfg.Server.ImageResolver = image.Resolver{} // pins image tags, as trellis bbs does
		b, err := standalone.Start(context.Background(), cfg, nil)
		if err != nil {
			sharedErr = err
			return
		}
		shared = &bbsEnv{bbs: b, pki: pki, dir: dir}
	})
	if sharedErr != nil {
		t.Fatalf("test BBS: %v", sharedErr)
	}
	return shared
}

// clientFor returns a BBS client with the certificate of files.
func (e *bbsEnv) clientFor(t *testing.T, files certs.Files) *client.Client {
	t.Helper()
	cc := client.DefaultConfig()
	cc.URL, cc.CAFile, cc.CertFile, cc.KeyFile = e.bbs.URL(), e.pki.CAFile, files.CertFile, files.KeyFile
	cc.ReconnectDelay = 20 * time.Millisecond
	c, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (e *bbsEnv) operator(t *testing.T) *client.Client { return e.clientFor(t, e.pki.Operator) }
func (e *bbsEnv) brain(t *testing.T) *client.Client    { return e.clientFor(t, e.pki.Brain) }

// uniq returns a name unique to this test process and call.
func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%100000, seq.Add(1))
}

// testConfig is an agent configuration for cellID against e, with short timings.
func (e *bbsEnv) testConfig(t *testing.T, cellID string) Config {
	t.Helper()
	files, err := e.pki.IssueCell(cellID)
	if err != nil {
		t.Fatal(err)
	}
	apiFiles, err := e.pki.IssueAgentServer(cellID, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.CellID = cellID
	cfg.BBS = BBSConfig{URL: e.bbs.URL(), CAFile: e.pki.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}
	cfg.Backend = BackendMemory
	cfg.RootFSProviders = map[string]string{"preloaded:cflinuxfs4": "", "docker": ""}
	cfg.DataDir = filepath.Join(e.dir, "cells", cellID)
	cfg.PresenceTTL = Duration(3 * time.Second)
	cfg.ReconcileInterval = Duration(time.Second)
	cfg.GracefulStop = Duration(500 * time.Millisecond)
	cfg.EvacuationTimeout = Duration(30 * time.Second)
	cfg.LogBytesPerInstance = 1 << 20
	cfg.CacheBytes = 64 << 20
	cfg.API = APIConfig{Listen: "127.0.0.1:0", CertFile: apiFiles.CertFile, KeyFile: apiFiles.KeyFile, CAFile: e.pki.CAFile}
	return cfg
}

// running is an agent started by a test.
type running struct {
	*Agent
	cancel context.CancelFunc
	exited chan struct{} // closed when Run has returned
	err    error         // what Run returned
}

// stop ends Run (containers keep running) and waits for it.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// startAgent runs an agent with cfg over backend until the test ends.
func startAgent(t *testing.T, e *bbsEnv, cfg Config, backend isolation.Backend) *running {
	t.Helper()
	return startAgentVia(t, e, cfg, backend, func(s store.Interface) store.Interface { return s })
}

// startAgentVia is startAgent with the agent's BBS client wrapped by wrap.
func startAgentVia(t *testing.T, e *bbsEnv, cfg Config, backend isolation.Backend, wrap func(store.Interface) store.Interface) *running {
	t.Helper()
	cell := e.clientFor(t, certs.Files{CertFile: cfg.BBS.CertFile, KeyFile: cfg.BBS.KeyFile})
	a, err := New(context.Background(), cfg, Options{Store: wrap(cell), Backend: backend, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.exited)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return at cleanup")
		}
		a.Close()
	})
	waitFor(t, 10*time.Second, "the cell is present", func() bool {
		_, err := e.operator(t).Cell(context.Background(), cfg.CellID)
		return err == nil
	})
	return r
}

// testLogger logs to the test at Info (Debug with -v).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // a goroutine may log after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memoryBackend is an in-memory host with the test programs of this package registered.
func memoryBackend(t *testing.T) *isolationtest.Memory {
	t.Helper()
	mc := isolationtest.DefaultMemoryConfig()
	// Container addresses are real loopback addresses the test programs listen on: give
	// every backend of the process a subnet of its own.
	n := backendSeq.Add(1)
	mc.ContainerSubnet = fmt.Sprintf("127.%d.%d.0/24", 100+(os.Getpid()+int(n))/250%100, (os.Getpid()+int(n))%250)
	m, err := isolationtest.NewMemory(mc)
	if err != nil {
		t.Fatal(err)
	}
	registerPrograms(m)
	return m
}

// ordinary returns the ORDINARY record of process/index.
func ordinary(t *testing.T, c store.Interface, guid string, index int32) *models.ActualLRP {
	t.Helper()
	recs, _, err := c.ActualLRPs(context.Background(), store.ActualLRPFilter{ProcessGuid: guid, Index: &index})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Presence == models.PresenceOrdinary {
			return r
		}
	}
	return nil
}

// waitState waits for the ORDINARY record of process/index to reach state and returns it.
func waitState(t *testing.T, c store.Interface, guid string, index int32, state string, timeout time.Duration) *models.ActualLRP {
	t.Helper()
	var rec *models.ActualLRP
	waitFor(t, timeout, fmt.Sprintf("%s/%d %s", guid, index, state), func() bool {
		rec = ordinary(t, c, guid, index)
		return rec != nil && rec.State == state
	})
	return rec
}

// desireAndPlace desires lrp (operator) and places each index on cells[i % len(cells)]
// (acting as the auctioneer).
func desireAndPlace(t *testing.T, e *bbsEnv, lrp *models.DesiredLRP, cells ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.operator(t).DesireLRP(ctx, lrp); err != nil {
		t.Fatalf("DesireLRP: %v", err)
	}
	for i := int32(0); i < lrp.Instances; i++ {
		key := models.ActualLRPKey{ProcessGuid: lrp.ProcessGuid, Index: i, Domain: lrp.Domain}
		if _, err := e.brain(t).PlaceActualLRP(ctx, key, cells[int(i)%len(cells)], 0); err != nil {
			t.Fatalf("PlaceActualLRP: %v", err)
		}
	}
}

// desireTaskOn desires task and places it on cellID.
func desireTaskOn(t *testing.T, e *bbsEnv, task *models.Task, cellID string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.operator(t).DesireTask(ctx, task); err != nil {
		t.Fatalf("DesireTask: %v", err)
	}
	if _, err := e.brain(t).PlaceTask(ctx, task.TaskGuid, cellID, 0); err != nil {
		t.Fatalf("PlaceTask: %v", err)
	}
}

// waitTask waits for the task to be COMPLETED and returns it.
func waitTask(t *testing.T, c store.Interface, guid string, timeout time.Duration) *models.Task {
	t.Helper()
	var task *models.Task
	waitFor(t, timeout, "task "+guid+" COMPLETED", func() bool {
		var err error
		task, err = c.Task(context.Background(), guid)
		return err == nil && task.State == models.TaskStateCompleted
	})
	return task
}

func storeFilter(guid string, index *int32) store.ActualLRPFilter {
	return store.ActualLRPFilter{ProcessGuid: guid, Index: index}
}

func logsInstance(key string, index int) logs.Instance { return logs.Instance{Key: key, Index: index} }
