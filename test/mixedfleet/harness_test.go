//go:build linux

package mixedfleet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/standalone"
	"github.com/trellis-run/trellis/bbs/store"
	"github.com/trellis-run/trellis/brain"
)

// fleet is what the tests share: the binaries, a BBS and brain on loopback with a dev PKI,
// the operator's client config, a blob server for droplets, and the wine set-up.
type fleet struct {
	dir       string // a short directory of this run (Unix socket paths live below it)
	linuxBin  string // trellis for Linux: the operator CLI and the Linux cell's agent
	winBin    string // trellis.exe
	droplet   string // URL of the Windows hello-app droplet
	pki       *certs.DevPKI
	bbs       *standalone.BBS
	store     store.Interface
	clientCfg string
	wine      string
	id        int // distinguishes this run's ports, bridges and cgroups from others'
}

var (
	shared     *fleet
	sharedErr  error
	sharedOnce sync.Once
	cleanups   []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// setup returns the shared fleet, building it on first use. It skips the test unless wine
// was set up by hack/wine-test.sh.
func setup(t *testing.T) *fleet {
	t.Helper()
	if os.Getenv("TRELLIS_WINE") == "" || os.Getenv("WINEPREFIX") == "" {
		t.Skip("needs wine: run hack/wine-test.sh (make test does), which prepares the wine prefix and runs these tests")
	}
	sharedOnce.Do(func() { shared, sharedErr = newFleet() })
	if sharedErr != nil {
		t.Fatalf("fleet set-up: %v", sharedErr)
	}
	return shared
}

func newFleet() (*fleet, error) {
	f := &fleet{id: os.Getpid() % 1000, wine: os.Getenv("TRELLIS_WINE_BIN")}
	if f.wine == "" {
		f.wine = "wine64"
	}
	dir, err := os.MkdirTemp("", "tmf")
	if err != nil {
		return nil, err
	}
	f.dir = dir
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	// Unprivileged Linux containers reach their state below it as a mapped user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}

	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	f.linuxBin, f.winBin = filepath.Join(dir, "trellis"), filepath.Join(dir, "trellis.exe")
	hello := filepath.Join(dir, "hello-app.exe")
	for _, b := range []struct{ goos, out, pkg string }{
		{"linux", f.linuxBin, "./cmd/trellis"},
		{"windows", f.winBin, "./cmd/trellis"},
		{"windows", hello, "./examples/hello-app"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+b.goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s for %s: %v\n%s", b.pkg, b.goos, err, out)
		}
	}
	tgz, err := tarGz("hello-app.exe", hello)
	if err != nil {
		return nil, err
	}
	blobs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hello-droplet-windows.tgz" {
			http.NotFound(w, r)
			return
		}
		w.Write(tgz)
	}))
	cleanups = append(cleanups, blobs.Close)
	f.droplet = blobs.URL + "/hello-droplet-windows.tgz"

	if f.pki, err = certs.EnsureDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		return nil, err
	}
	cfg := standalone.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "bbs")
	cfg.Server.ListenAddress = "127.0.0.1:0"
	cfg.Server.TLS.CAFile = f.pki.CAFile
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = f.pki.Server.CertFile, f.pki.Server.KeyFile
	cfg.EmbeddedEtcd.LogLevel = slog.LevelError + 4
	ctx, cancel := context.WithCancel(context.Background())
	b, err := standalone.Start(ctx, cfg, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	f.bbs, f.store = b, b.Store
	br, err := brain.New(brain.DefaultConfig(), b.Store, nil, nil)
	if err != nil {
		cancel()
		b.Close()
		return nil, err
	}
	brainDone := make(chan error, 1)
	go func() { brainDone <- br.Run(ctx) }()
	cleanups = append(cleanups, func() {
		cancel()
		<-brainDone
		b.Close()
	})

	cc := client.DefaultConfig()
	cc.URL, cc.CAFile = b.URL(), f.pki.CAFile
	cc.CertFile, cc.KeyFile = f.pki.Operator.CertFile, f.pki.Operator.KeyFile
	f.clientCfg = filepath.Join(dir, "client.json")
	if err := client.WriteConfig(f.clientCfg, cc); err != nil {
		return nil, err
	}
	return f, nil
}

// tarGz returns a .tgz holding the file at path under name.
func tarGz(name, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	tw.Write(data)
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// winPath is the wine (Z:) path of a Linux path.
func winPath(p string) string { return "Z:" + strings.ReplaceAll(p, "/", `\`) }

// cli runs the Linux trellis binary as the operator and returns its standard output.
func (f *fleet) cli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.linuxBin, append(args, "--config", f.clientCfg)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("trellis %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// process is a child process whose output is kept for failure messages.
type process struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start starts cmd with its output kept, in a process group of its own.
func start(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Processes wine starts for the child may hold its output pipe open after it exits.
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p
}

// stop sends sig to the process and waits up to wait, then kills its process group.
func (p *process) stop(sig syscall.Signal, wait time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(wait):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// killProcessesUnder kills, by pid, every process whose command line names dir as a wine
// path (Z:\...): the
// Windows processes that wine started for this run (containers outlive their agent by
// design, and wine's processes are children of wineserver, not of the agent). It returns
// the command lines of those it killed.
func killProcessesUnder(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var killed []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		if strings.Contains(s, winPath(dir)) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, s)
			}
		}
	}
	return killed
}

// waitFor polls cond every 200 ms until it returns true or timeout passes, then fails with
// what describe says.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
}

// instances returns the ORDINARY instances of guid.
func (f *fleet) instances(t *testing.T, guid string) []*models.ActualLRP {
	t.Helper()
	all, _, err := f.store.ActualLRPs(context.Background(), store.ActualLRPFilter{ProcessGuid: guid})
	if err != nil {
		t.Fatalf("ActualLRPs(%s): %v", guid, err)
	}
	var out []*models.ActualLRP
	for _, a := range all {
		if a.Presence == models.PresenceOrdinary || a.Presence == "" {
			out = append(out, a)
		}
	}
	return out
}

// get does an HTTP GET and returns the body.
func get(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}
