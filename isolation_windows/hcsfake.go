package isolationwindows

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/trellis-run/trellis/isolation"
)

// hcsFake is an in-memory hcsAPI and hnsAPI with HCS's observable behaviour, for running
// container mode where HCS does not exist: documents are decoded and checked as HCS checks
// them (SystemType, layers that exist, a volume that is the prepared scratch layer, mapped
// host directories that exist, endpoints that exist), compute systems move through
// created → running → stopped, and a process is a real host process whose C:\ is the
// scratch volume (a directory holding the union of the layers' Files, bottom layer first).
// The fake has no file-system namespace: it tells a process its root through rootEnv.
type hcsFake struct {
	rootEnv string

	mu        sync.Mutex
	scratch   map[string]string // scratch id -> volume dir
	systems   map[string]*fakeSystem
	endpoints map[string]string // id -> ip
	nextIP    int
	// Docs records every document received, for tests.
	docs []json.RawMessage
}

type fakeSystem struct {
	doc   hcsContainerDoc
	state string // "created", "running", "stopped"
	procs map[int]*fakeProc
}

func newHCSFake(rootEnv string) *hcsFake {
	return &hcsFake{rootEnv: rootEnv, scratch: map[string]string{}, systems: map[string]*fakeSystem{}, endpoints: map[string]string{}, nextIP: 2}
}

func (f *hcsFake) LayerID(layerPath string) (string, error) {
	if _, err := os.Stat(layerPath); err != nil {
		return "", fmt.Errorf("layer %s: %w", layerPath, err)
	}
	s := sha256.Sum256([]byte(filepath.Base(layerPath)))
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16]), nil
}

func (f *hcsFake) PrepareScratch(ctx context.Context, scratchDir, id string, parents []string) (string, error) {
	vol := filepath.Join(scratchDir, id, "volume")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		return "", err
	}
	for i := len(parents) - 1; i >= 0; i-- {
		if err := copyTree(filepath.Join(parents[i], "Files"), vol); err != nil {
			return "", fmt.Errorf("layer %s: %w", parents[i], err)
		}
	}
	f.mu.Lock()
	f.scratch[id] = vol
	f.mu.Unlock()
	return vol, nil
}

// copyTree copies src's files into dst (hard links where possible).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		os.Remove(target)
		if os.Link(p, target) == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		return os.WriteFile(target, data, fi.Mode().Perm())
	})
}

func (f *hcsFake) ReleaseScratch(ctx context.Context, scratchDir, id string) error {
	f.mu.Lock()
	delete(f.scratch, id)
	f.mu.Unlock()
	return removeTree(filepath.Join(scratchDir, id))
}

func (f *hcsFake) CreateComputeSystem(ctx context.Context, id string, doc []byte) error {
	var d hcsContainerDoc
	dec := json.NewDecoder(strings.NewReader(string(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("hcs fake: invalid container document: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.docs = append(f.docs, doc)
	switch {
	case f.systems[id] != nil:
		return fmt.Errorf("hcs fake: compute system %s: %w", id, isolation.ErrAlreadyExists)
	case d.SystemType != "Container" || d.Name != id:
		return fmt.Errorf("hcs fake: SystemType %q Name %q: want Container and %s", d.SystemType, d.Name, id)
	case len(d.Layers) == 0:
		return errors.New("hcs fake: no layers")
	case d.VolumePath == "" || d.VolumePath != f.scratch[id]:
		return fmt.Errorf("hcs fake: VolumePath %q is not the prepared scratch layer", d.VolumePath)
	}
	for _, l := range d.Layers {
		if _, err := os.Stat(l.Path); err != nil {
			return fmt.Errorf("hcs fake: layer %s: %w", l.Path, err)
		}
	}
	for _, m := range d.MappedDirectories {
		if fi, err := os.Stat(m.HostPath); err != nil || !fi.IsDir() {
			return fmt.Errorf("hcs fake: mapped directory %s is not a host directory", m.HostPath)
		}
	}
	for _, ep := range d.EndpointList {
		if _, ok := f.endpoints[ep]; !ok {
			return fmt.Errorf("hcs fake: endpoint %s does not exist", ep)
		}
	}
	f.systems[id] = &fakeSystem{doc: d, state: "created", procs: map[int]*fakeProc{}}
	return nil
}

func (f *hcsFake) system(id string) (*fakeSystem, error) {
	s := f.systems[id]
	if s == nil {
		return nil, fmt.Errorf("hcs fake: compute system %s: %w", id, isolation.ErrNotFound)
	}
	return s, nil
}

func (f *hcsFake) OpenComputeSystem(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.system(id)
	return err
}

func (f *hcsFake) Start(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.system(id)
	if err != nil {
		return err
	}
	if s.state != "created" {
		return fmt.Errorf("hcs fake: Start of a %s compute system", s.state)
	}
	s.state = "running"
	return nil
}

// hostPath maps a container path (C:\x or a relative one) to the volume.
func (s *fakeSystem) hostPath(p string) string {
	p = strings.ReplaceAll(p, `\`, "/")
	if len(p) >= 2 && p[1] == ':' {
		return filepath.Join(s.doc.VolumePath, filepath.FromSlash(p[2:]))
	}
	return p
}

func (f *hcsFake) CreateProcess(ctx context.Context, id string, doc []byte) (hcsProcess, error) {
	var d hcsProcessDoc
	dec := json.NewDecoder(strings.NewReader(string(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("hcs fake: invalid process document: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.docs = append(f.docs, doc)
	s, err := f.system(id)
	if err != nil {
		return nil, err
	}
	if s.state != "running" {
		return nil, fmt.Errorf("hcs fake: CreateProcess in a %s compute system", s.state)
	}
	argv := splitCommandLine(d.CommandLine)
	if len(argv) == 0 {
		return nil, errors.New("hcs fake: empty CommandLine")
	}
	cmd := exec.Command(s.hostPath(argv[0]), argv[1:]...)
	cmd.Dir = s.hostPath(d.WorkingDirectory)
	for k, v := range d.Environment {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, f.rootEnv+"="+s.doc.VolumePath)
	p := &fakeProc{cmd: cmd, done: make(chan struct{})}
	// Pipes of our own (not cmd's), so that reads end at the process's exit and never race
	// with cmd.Wait, as HCS pipes behave.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	p.stdin, p.stdout, p.stderr = inW, outR, errR
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("hcs fake: starting %s: %w", argv[0], err)
	}
	s.procs[cmd.Process.Pid] = p
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (f *hcsFake) OpenProcess(ctx context.Context, id string, pid int) (hcsProcess, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.system(id)
	if err != nil {
		return nil, err
	}
	p := s.procs[pid]
	if p == nil {
		return nil, fmt.Errorf("hcs fake: process %d: %w", pid, isolation.ErrNotFound)
	}
	return p, nil
}

func (f *hcsFake) signalAll(id string, sig os.Signal, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.system(id)
	if err != nil {
		return err
	}
	for _, p := range s.procs {
		p.cmd.Process.Signal(sig)
	}
	if state != "" {
		s.state = state
	}
	return nil
}

// Shutdown delivers the console shutdown event, which a Go program sees as SIGTERM.
func (f *hcsFake) Shutdown(ctx context.Context, id string) error {
	return f.signalAll(id, syscall.SIGTERM, "")
}

func (f *hcsFake) Terminate(ctx context.Context, id string) error {
	return f.signalAll(id, syscall.SIGKILL, "stopped")
}

func (f *hcsFake) Statistics(ctx context.Context, id string) (hcsStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.system(id)
	if err != nil {
		return hcsStats{}, err
	}
	n := 0
	for _, p := range s.procs {
		select {
		case <-p.done:
		default:
			n++
		}
	}
	return hcsStats{Processes: uint64(n)}, nil
}

func (f *hcsFake) Close(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.systems[id]; s != nil && s.state == "stopped" {
		delete(f.systems, id)
	}
	return nil
}

func (f *hcsFake) CreateEndpoint(ctx context.Context, network string, doc []byte) (string, string, error) {
	var d hnsEndpointDoc
	dec := json.NewDecoder(strings.NewReader(string(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return "", "", fmt.Errorf("hns fake: invalid endpoint document: %w", err)
	}
	if d.SchemaVersion.Major != 2 {
		return "", "", fmt.Errorf("hns fake: schema %d.%d, want 2.x", d.SchemaVersion.Major, d.SchemaVersion.Minor)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.docs = append(f.docs, doc)
	id := fmt.Sprintf("ep-%s-%d", network, f.nextIP)
	ip := fmt.Sprintf("172.30.0.%d", f.nextIP)
	f.nextIP++
	f.endpoints[id] = ip
	return id, ip, nil
}

func (f *hcsFake) DeleteEndpoint(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.endpoints, id)
	return nil
}

// fakeProc is a host process standing for a process in a fake compute system.
type fakeProc struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr io.ReadCloser
	done           chan struct{}
	waitErr        error
}

func (p *fakeProc) Pid() int { return p.cmd.Process.Pid }
func (p *fakeProc) Stdio() (io.WriteCloser, io.ReadCloser, io.ReadCloser, error) {
	return p.stdin, p.stdout, p.stderr, nil
}
func (p *fakeProc) CloseStdin() error { return p.stdin.Close() }
func (p *fakeProc) Wait() error       { <-p.done; return nil }
func (p *fakeProc) ExitCode() (int, error) {
	<-p.done
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return p.cmd.ProcessState.ExitCode(), nil
}
func (p *fakeProc) Kill() error  { return p.cmd.Process.Kill() }
func (p *fakeProc) Close() error { return nil }
