package isolationlinux

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parentOf reads the parent pid of pid from /proc/<pid>/stat.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...
	rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

func spawnerPid(t *testing.T, b *Backend) int {
	t.Helper()
	b.spawner.mu.Lock()
	defer b.spawner.mu.Unlock()
	if b.spawner.cmd == nil {
		t.Fatal("the backend has no init spawner running")
	}
	return b.spawner.cmd.Process.Pid
}

// Inits are started by the backend's spawner, never forked by the backend itself; a spawner
// that died is replaced at the next start, and the containers it started live on.
func TestInitSpawner(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.InitPoolSize = 0 // every init is started at Create, by the spawner
	b := newTestBackend(t, cfg)
	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	sp := spawnerPid(t, b)
	if sp == os.Getpid() {
		t.Fatal("the spawner is the backend's own process")
	}
	if got := parentOf(t, rec.InitPid); got != sp {
		t.Fatalf("init %d has parent %d, want the spawner %d (backend %d)", rec.InitPid, got, sp, os.Getpid())
	}

	if err := syscall.Kill(sp, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := syscall.Kill(sp, 0); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spawner %d still runs after SIGKILL", sp)
		}
	}
	// The container it started runs on.
	if r := sh(t, c, "", "echo alive"); r.code != 0 || r.stdout != "alive\n" {
		t.Fatalf("container started by the dead spawner: %+v", r)
	}
	c2 := createContainer(t, b, nil)
	rec2, err := readRecord(b.dir(c2.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	sp2 := spawnerPid(t, b)
	if sp2 == sp {
		t.Fatalf("spawner pid %d after its death, want a new one", sp2)
	}
	if got := parentOf(t, rec2.InitPid); got != sp2 {
		t.Fatalf("init %d has parent %d, want the new spawner %d", rec2.InitPid, got, sp2)
	}
	if r := sh(t, c2, "", "hostname"); r.code != 0 || r.stdout != c2.Handle()+"\n" {
		t.Fatalf("container from the new spawner: %+v", r)
	}

	// Close ends the spawner.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(sp2, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("spawner %d still runs after Close", sp2)
		}
	}
}

// An init runs with the collector off and a memory limit; the container's processes do not
// inherit that environment.
func TestInitEnvironment(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(rec.InitPid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for _, want := range []string{"GOGC=off", "GOMEMLIMIT=16MiB"} {
		if !slices.Contains(env, want) {
			t.Errorf("init environment %q lacks %s", env, want)
		}
	}
	if r := sh(t, c, "", "env | grep -c '^GO' || true"); r.stdout != "0\n" {
		t.Fatalf("a container process sees Go runtime settings of the init: %+v", r)
	}
}
