package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// trellisBin is the binary under test and blobsDir the example droplets, built once by
// TestMain.
var trellisBin, blobsDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trellis-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	trellisBin = filepath.Join(dir, "trellis")
	build := exec.Command("go", "build", "-o", trellisBin, "github.com/trellis-run/trellis/cmd/trellis")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build and the packages
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build trellis:", err)
		os.Exit(1)
	}
	blobsDir = filepath.Join(dir, "blobs")
	examples := exec.Command("bash", "../../hack/build-examples.sh", blobsDir)
	examples.Stdout, examples.Stderr = os.Stderr, os.Stderr
	if err := examples.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the example droplets:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is a `trellis dev` process.
type cluster struct {
	t       *testing.T
	dir     string
	listen  string
	config  string
	cmd     *exec.Cmd
	output  *syncBuffer
	stopped chan struct{}
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCluster starts `trellis dev` in dir (a fresh one when empty) with extra flags (e.g.
// "--cells", "0") and waits until it says it is up. The cluster is stopped at the end of the
// test.
func startCluster(t *testing.T, dir, listen string, extra ...string) *cluster {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if listen == "" {
		listen = freeAddr(t)
	}
	c := &cluster{t: t, dir: dir, listen: listen, config: filepath.Join(dir, "config.json"), output: new(syncBuffer), stopped: make(chan struct{})}
	args := append([]string{"dev", "--data-dir", filepath.Join(dir, "data"), "--listen", listen, "--client-config", c.config,
		"--blobs-dir", blobsDir, "--blobs-listen", freeAddr(t), "--example", ""}, extra...)
	c.cmd = exec.Command(trellisBin, args...)
	c.cmd.Env = append(os.Environ(), "HOME="+dir)
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = c.output
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			c.output.WriteString(sc.Text() + "\n")
			if !signalled && strings.Contains(sc.Text(), "cluster is up") {
				close(up)
				signalled = true
			}
		}
		c.cmd.Wait()
		close(c.stopped)
	}()
	select {
	case <-up:
	case <-c.stopped:
		t.Fatalf("trellis dev exited before it was up:\n%s", c.output)
	case <-time.After(60 * time.Second):
		c.stop()
		t.Fatalf("trellis dev not up after 60s:\n%s", c.output)
	}
	// Cleanups run last-in first-out: the cluster stops first, then what it keeps on the host
	// outside its data dir (the cells' directories, cgroups, and whatever containers and
	// networks a failed stop left) is purged.
	t.Cleanup(c.purge)
	t.Cleanup(c.stop)
	return c
}

// purge runs `trellis dev purge` for the cluster's data dir once it has stopped: a test
// cluster's data dir is a temporary one, so nothing could purge its cells later.
func (c *cluster) purge() {
	out, err := exec.Command(trellisBin, "dev", "purge", "--data-dir", filepath.Join(c.dir, "data")).CombinedOutput()
	if err != nil {
		c.t.Errorf("trellis dev purge: %v\n%s", err, out)
	}
}

// stop interrupts the cluster as Ctrl-C would and waits for it to exit.
func (c *cluster) stop() {
	select {
	case <-c.stopped:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.stopped:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.stopped
		c.t.Errorf("trellis dev did not stop within 30s of SIGINT:\n%s", c.output)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer goroutine and readers in the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) WriteString(s string) (int, error) { return b.Write([]byte(s)) }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// result is what one CLI invocation printed.
type result struct {
	stdout, stderr string
	code           int
}

// run runs `trellis args...` against the cluster and returns what it printed.
func (c *cluster) run(args ...string) result {
	c.t.Helper()
	return c.runStdin("", args...)
}

func (c *cluster) runStdin(stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, trellisBin, append(args, "--config", c.config)...)
	cmd.Dir = repoRoot(c.t)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("trellis %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs the command and fails the test unless it exits 0.
func (c *cluster) must(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("trellis %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// repoRoot is the module root, where examples/ lives.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}
