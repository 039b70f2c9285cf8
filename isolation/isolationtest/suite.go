package isolationtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// Harness adapts one backend to the conformance suite.
type Harness struct {
	// New returns a fresh backend over its own state (t.TempDir etc.). The suite destroys what
	// it creates; New registers any other cleanup with t.Cleanup.
	New func(t *testing.T) isolation.Backend
	// Reopen, when non-nil, returns a new Backend over the same state as b (a restarted
	// agent); the suite then checks Lookup/List/Attach/Wait survive it. The suite keeps using
	// only the new backend afterwards.
	Reopen func(t *testing.T, b isolation.Backend) isolation.Backend
	// RootFS is a rootfs URI the backend supports.
	RootFS string
	// Program maps a test program to a ProcessSpec that behaves as its Kind documents. The
	// suite may add Env, Dir and ID to the returned spec.
	Program func(p Program) isolation.ProcessSpec
	// Skip maps a subtest name (a group such as "Stream", or "Stream/Modes") to the reason the
	// backend cannot pass it. Names that are not subtests fail the suite (see SubtestNames).
	Skip map[string]string
}

// Timeouts the suite allows. They are generous because a Windows backend under wine is slow;
// a conforming backend never gets near them.
const (
	// opTimeout bounds each subtest's context.
	opTimeout = 2 * time.Minute
	// exitTimeout bounds how long a process that should exit may take to do so.
	exitTimeout = 30 * time.Second
	// waitSlack is how much longer than its context Wait may take to return.
	waitSlack = 5 * time.Second
	// surviveFor is how long a process that should keep running is watched.
	surviveFor = 300 * time.Millisecond
	// stopGrace is the grace given to Stop when the suite expects it to kill.
	stopGrace = 500 * time.Millisecond
)

type conformanceTest struct {
	name string // "Group/Sub" or "Name"
	fn   func(t *testing.T, s *suite)
}

// SubtestNames returns the names RunConformance runs and Harness.Skip accepts, groups included.
func SubtestNames() []string {
	var names []string
	seen := map[string]bool{}
	for _, ct := range conformanceTests {
		if group, _, ok := strings.Cut(ct.name, "/"); ok && !seen[group] {
			seen[group] = true
			names = append(names, group)
		}
		names = append(names, ct.name)
	}
	return names
}

// RunConformance runs the conformance suite against the backend h adapts: one t.Run per
// subtest, under stable names (SubtestNames), each on a fresh backend from h.New.
func RunConformance(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil || h.Program == nil || h.RootFS == "" {
		t.Fatal("isolationtest: Harness needs New, Program and RootFS")
	}
	known := map[string]bool{}
	for _, n := range SubtestNames() {
		known[n] = true
	}
	for name := range h.Skip {
		if !known[name] {
			t.Errorf("isolationtest: Harness.Skip names %q, which is not a subtest (have %v)", name, SubtestNames())
		}
	}
	// Group the table by its first element, keeping the table's order.
	type group struct {
		name  string
		tests []conformanceTest
	}
	var groups []*group
	byName := map[string]*group{}
	for _, ct := range conformanceTests {
		g, _, _ := strings.Cut(ct.name, "/")
		if byName[g] == nil {
			byName[g] = &group{name: g}
			groups = append(groups, byName[g])
		}
		byName[g].tests = append(byName[g].tests, ct)
	}
	runOne := func(t *testing.T, ct conformanceTest) {
		if reason, ok := h.Skip[ct.name]; ok {
			t.Skip(reason)
		}
		ct.fn(t, &suite{h: h})
	}
	for _, g := range groups {
		if len(g.tests) == 1 && g.tests[0].name == g.name {
			t.Run(g.name, func(t *testing.T) { runOne(t, g.tests[0]) })
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			if reason, ok := h.Skip[g.name]; ok {
				t.Skip(reason)
			}
			for _, ct := range g.tests {
				_, sub, _ := strings.Cut(ct.name, "/")
				t.Run(sub, func(t *testing.T) { runOne(t, ct) })
			}
		})
	}
}

// suite carries the harness through one subtest.
type suite struct {
	h Harness
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// backend returns a fresh backend from the harness.
func (s *suite) backend(t *testing.T) isolation.Backend {
	t.Helper()
	b := s.h.New(t)
	if b == nil {
		t.Fatal("Harness.New returned nil")
	}
	return b
}

// uniq returns a short random name part, so handles never collide across runs on one host.
func uniq(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// spec returns a valid container spec with a fresh handle.
func (s *suite) spec(t *testing.T) isolation.ContainerSpec {
	return isolation.ContainerSpec{Handle: "conformance-" + uniq(t), RootFS: s.h.RootFS}
}

// create creates a container from a fresh spec changed by mutate, destroyed at cleanup.
func (s *suite) create(t *testing.T, b isolation.Backend, mutate ...func(*isolation.ContainerSpec)) isolation.Container {
	t.Helper()
	spec := s.spec(t)
	for _, m := range mutate {
		m(&spec)
	}
	return s.createSpec(t, b, spec)
}

func (s *suite) createSpec(t *testing.T, b isolation.Backend, spec isolation.ContainerSpec) isolation.Container {
	t.Helper()
	c, err := b.Create(s.ctx(t), spec)
	if err != nil {
		t.Fatalf("Create(%q): %v", spec.Handle, err)
	}
	s.destroyAtCleanup(t, b, spec.Handle)
	return c
}

func (s *suite) destroyAtCleanup(t *testing.T, b isolation.Backend, handle string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := b.Destroy(ctx, handle); err != nil {
			t.Errorf("cleanup: Destroy(%q): %v", handle, err)
		}
	})
}

// proc is a started test program with its captured output.
type proc struct {
	isolation.Process
	prog   Program
	stdout *syncBuffer
	stderr *syncBuffer
}

// runOpts adjust the ProcessSpec the harness makes.
type runOpts struct {
	id    string
	dir   string
	env   []string
	stdin io.Reader
}

// start runs prog in c and fails the test if it cannot start.
func (s *suite) start(t *testing.T, c isolation.Container, prog Program, o runOpts) *proc {
	t.Helper()
	p, err := s.tryStart(t, c, prog, o)
	if err != nil {
		t.Fatalf("Run(%v) in %q: %v", prog, c.Handle(), err)
	}
	return p
}

func (s *suite) tryStart(t *testing.T, c isolation.Container, prog Program, o runOpts) (*proc, error) {
	t.Helper()
	spec := s.h.Program(prog)
	if o.id != "" {
		spec.ID = o.id
	}
	if o.dir != "" {
		spec.Dir = o.dir
	}
	spec.Env = append(slices.Clone(spec.Env), o.env...)
	p := &proc{prog: prog, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	var err error
	p.Process, err = c.Run(s.ctx(t), spec, isolation.ProcessIO{Stdin: o.stdin, Stdout: p.stdout, Stderr: p.stderr})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// waitReady waits for a Sleep or IgnoreTerm program to report it is ready for signals.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(exitTimeout)
	for !strings.Contains(p.stdout.String(), ReadyLine) {
		if time.Now().After(deadline) {
			t.Fatalf("%v did not print %q within %v (stdout %q, stderr %q)",
				p.prog, ReadyLine, exitTimeout, p.stdout.String(), p.stderr.String())
		}
		// Fail at once, not after the deadline, when the program died before it was ready.
		if code, err := waitWithin(t, p, 5*time.Millisecond); err == nil {
			t.Fatalf("%v exited %d before printing %q (stdout %q, stderr %q)",
				p.prog, code, ReadyLine, p.stdout.String(), p.stderr.String())
		}
	}
}

// waitExit waits for p to exit and returns its status.
func waitExit(t *testing.T, p isolation.Process) int {
	t.Helper()
	code, err := waitWithin(t, p, exitTimeout)
	if err != nil {
		t.Fatalf("process %q did not exit within %v: %v", p.ID(), exitTimeout, err)
	}
	return code
}

// waitWithin calls Wait with a context of timeout d and fails the test if Wait ignores it.
func waitWithin(t *testing.T, p isolation.Process, d time.Duration) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	type result struct {
		code int
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		code, err := p.Wait(ctx)
		ch <- result{code, err}
	}()
	select {
	case r := <-ch:
		return r.code, r.err
	case <-time.After(d + waitSlack):
		t.Fatalf("Wait of process %q ignored its context: still blocked %v after a %v deadline", p.ID(), waitSlack, d)
		return 0, nil
	}
}

// expectExit waits for p and checks its exit status.
func (p *proc) expectExit(t *testing.T, want int) {
	t.Helper()
	if got := waitExit(t, p); got != want {
		t.Fatalf("%v exited %d, want %d (stdout %q, stderr %q)", p.prog, got, want, p.stdout.String(), p.stderr.String())
	}
}

// expectRunning checks that p is still running after surviveFor.
func expectRunning(t *testing.T, p isolation.Process, why string) {
	t.Helper()
	code, err := waitWithin(t, p, surviveFor)
	if err == nil {
		t.Fatalf("process %q exited %d %s; want it still running", p.ID(), code, why)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an expired context: %v, want an error wrapping context.DeadlineExceeded", err)
	}
}

// runToExit runs prog to completion and returns its status and output.
func (s *suite) runToExit(t *testing.T, c isolation.Container, prog Program, o runOpts) (int, string, string) {
	t.Helper()
	p := s.start(t, c, prog, o)
	code := waitExit(t, p)
	return code, p.stdout.String(), p.stderr.String()
}

// output runs prog, requires exit 0 and returns its stdout with Windows line ends normalised.
func (s *suite) output(t *testing.T, c isolation.Container, prog Program, o runOpts) string {
	t.Helper()
	code, stdout, stderr := s.runToExit(t, c, prog, o)
	if code != 0 {
		t.Fatalf("%v exited %d, want 0 (stdout %q, stderr %q)", prog, code, stdout, stderr)
	}
	return strings.ReplaceAll(stdout, "\r\n", "\n")
}

// readFile reads path through the container with the ReadFile program; ok is false when the
// program could not read it.
func (s *suite) readFile(t *testing.T, c isolation.Container, path string) (string, bool) {
	t.Helper()
	code, stdout, _ := s.runToExit(t, c, ReadFile(path), runOpts{})
	return stdout, code == 0
}

// expectFile checks path holds content, as seen by a program in the container.
func (s *suite) expectFile(t *testing.T, c isolation.Container, path, content string) {
	t.Helper()
	got, ok := s.readFile(t, c, path)
	if !ok {
		t.Fatalf("ReadFile(%q) in the container failed; want content %q", path, content)
	}
	if got != content {
		t.Fatalf("ReadFile(%q) = %q, want %q", path, got, content)
	}
}

// expectNoFile checks a program in the container cannot read path.
func (s *suite) expectNoFile(t *testing.T, c isolation.Container, path string) {
	t.Helper()
	if got, ok := s.readFile(t, c, path); ok {
		t.Fatalf("ReadFile(%q) in the container read %q; want no such file", path, got)
	}
}

// listDir lists path through the container, sorted.
func (s *suite) listDir(t *testing.T, c isolation.Container, path string) []string {
	t.Helper()
	out := s.output(t, c, ListDir(path), runOpts{})
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

// mkdir makes the absolute directory dir (and parents) by streaming into "/".
func (s *suite) mkdir(t *testing.T, c isolation.Container, dir string) {
	t.Helper()
	s.streamIn(t, c, "/", []tarMember{{name: strings.TrimPrefix(dir, "/") + "/", typ: tar.TypeDir, mode: 0o755}})
}

func (s *suite) streamIn(t *testing.T, c isolation.Container, dst string, members []tarMember) {
	t.Helper()
	if err := c.StreamIn(s.ctx(t), dst, bytes.NewReader(buildTar(t, members))); err != nil {
		t.Fatalf("StreamIn(%q): %v", dst, err)
	}
}

// streamOut reads srcPath back as members.
func (s *suite) streamOut(t *testing.T, c isolation.Container, src string) []tarMember {
	t.Helper()
	rc, err := c.StreamOut(s.ctx(t), src)
	if err != nil {
		t.Fatalf("StreamOut(%q): %v", src, err)
	}
	defer rc.Close()
	members, err := readTar(rc)
	if err != nil {
		t.Fatalf("StreamOut(%q): reading the archive: %v", src, err)
	}
	return members
}

// tarMember is an archive entry in the suite's terms.
type tarMember struct {
	name     string
	typ      byte
	mode     int64
	body     string
	linkname string
}

func (m tarMember) String() string {
	return fmt.Sprintf("{%s type=%q mode=%o size=%d link=%q}", m.name, m.typ, m.mode, len(m.body), m.linkname)
}

func buildTar(t *testing.T, members []tarMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Linkname: m.linkname,
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if m.typ == tar.TypeReg {
			hdr.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("building tar: %v", err)
		}
		if _, err := io.WriteString(tw, m.body); err != nil {
			t.Fatalf("building tar: %v", err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("building tar: %v", err)
	}
	return buf.Bytes()
}

// readTar reads an archive, normalising names (no "./" prefix, no trailing "/").
func readTar(r io.Reader) ([]tarMember, error) {
	tr := tar.NewReader(r)
	var out []tarMember
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/")
		if name == "" || name == "." {
			continue
		}
		out = append(out, tarMember{name: name, typ: hdr.Typeflag, mode: hdr.Mode & 0o7777, body: string(body), linkname: hdr.Linkname})
	}
}

// syncBuffer is a goroutine-safe output sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// names returns the handles of cs, sorted.
func names(cs []isolation.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Handle())
	}
	sort.Strings(out)
	return out
}

// normField lowercases s and keeps only letters and digits, so "Limits.CPUWeight",
// "limits.cpu_weight" and "cpu weight" all contain "cpuweight".
func normField(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// expectInvalid checks err is an ErrInvalidSpec whose message names field.
func expectInvalid(t *testing.T, err error, field string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("got no error, want ErrInvalidSpec naming %s", field)
	case !isolation.IsInvalidSpec(err):
		t.Fatalf("error %q is not ErrInvalidSpec (want it naming %s)", err, field)
	case !strings.Contains(normField(err.Error()), normField(field)):
		t.Fatalf("error %q does not name the field %s", err, field)
	}
}
