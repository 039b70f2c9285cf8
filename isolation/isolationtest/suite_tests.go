package isolationtest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

// conformanceTests is the suite, in run order. Names are stable: harnesses skip by them.
var conformanceTests = []conformanceTest{
	{"Ping", testPing},
	{"Capacity", testCapacity},
	{"Create/LookupAndList", testCreateLookupList},
	{"Create/PropertiesFilter", testCreatePropertiesFilter},
	{"Create/DuplicateHandle", testCreateDuplicate},
	{"Create/ConcurrentSameHandle", testCreateConcurrentSame},
	{"Create/InvalidHandle", testCreateInvalidHandle},
	{"Create/InvalidSpec", testCreateInvalidSpec},
	{"Create/UnsupportedRootFS", testCreateUnsupportedRootFS},
	{"Run/ExitCodes", testRunExitCodes},
	{"Run/Stdio", testRunStdio},
	{"Run/Stdin", testRunStdin},
	{"Run/Env", testRunEnv},
	{"Run/WorkingDir", testRunWorkingDir},
	{"Run/OutlivesContext", testRunOutlivesContext},
	{"Run/DuplicateID", testRunDuplicateID},
	{"Run/InvalidSpec", testRunInvalidSpec},
	{"Wait/Context", testWaitContext},
	{"Signal/Terminate", testSignalTerminate},
	{"Signal/Kill", testSignalKill},
	{"Signal/Exited", testSignalExited},
	{"Attach/Running", testAttachRunning},
	{"Attach/Exited", testAttachExited},
	{"Attach/Unknown", testAttachUnknown},
	{"Stream/RoundTrip", testStreamRoundTrip},
	{"Stream/Modes", testStreamModes},
	{"Stream/File", testStreamFile},
	{"Stream/ProgramSeesFiles", testStreamProgramSeesFiles},
	{"Stream/MissingPath", testStreamMissing},
	{"Stream/Escape", testStreamEscape},
	{"Stream/SymlinkEscape", testStreamSymlinkEscape},
	{"Stop/Grace", testStopGrace},
	{"Stop/AfterGrace", testStopAfterGrace},
	{"Stop/Kill", testStopKill},
	{"Stop/Stopped", testStopStopped},
	{"Info/State", testInfoState},
	{"Info/MappedPorts", testInfoMappedPorts},
	{"Properties", testProperties},
	{"Metrics/Known", testMetricsKnown},
	{"Metrics/Limit", testMetricsLimit},
	{"Destroy", testDestroy},
	{"Concurrent", testConcurrent},
	{"Reopen/Container", testReopenContainer},
	{"Reopen/Process", testReopenProcess},
}

func testPing(t *testing.T, s *suite) {
	if err := s.backend(t).Ping(s.ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCapacity(t *testing.T, s *suite) {
	c, err := s.backend(t).Capacity(s.ctx(t))
	if err != nil {
		t.Fatalf("Capacity: %v", err)
	}
	if c.MemoryBytes == 0 || c.DiskBytes == 0 || c.MaxContainers == 0 {
		t.Fatalf("Capacity = %+v; want every field non-zero", c)
	}
}

func testCreateLookupList(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	c := s.create(t, b)
	got, err := b.Lookup(ctx, c.Handle())
	if err != nil {
		t.Fatalf("Lookup(%q) after Create: %v", c.Handle(), err)
	}
	if got.Handle() != c.Handle() {
		t.Fatalf("Lookup(%q).Handle() = %q", c.Handle(), got.Handle())
	}
	all, err := b.List(ctx, nil)
	if err != nil {
		t.Fatalf("List(nil): %v", err)
	}
	if !slices.Contains(names(all), c.Handle()) {
		t.Fatalf("List(nil) = %v; want it to include %q", names(all), c.Handle())
	}
	missing := "conformance-missing-" + uniq(t)
	if _, err := b.Lookup(ctx, missing); !isolation.IsNotFound(err) {
		t.Fatalf("Lookup(%q) of a handle never created: %v, want ErrNotFound", missing, err)
	}
}

func testCreatePropertiesFilter(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	k1, k2 := "conformance.group", "conformance.role"
	group := uniq(t)
	withProps := func(p isolation.Properties) func(*isolation.ContainerSpec) {
		return func(spec *isolation.ContainerSpec) { spec.Properties = p }
	}
	a := s.create(t, b, withProps(isolation.Properties{k1: group, k2: "web"}))
	w := s.create(t, b, withProps(isolation.Properties{k1: group, k2: "worker"}))
	s.create(t, b, withProps(isolation.Properties{k1: "other-" + group, k2: "web"}))
	cases := []struct {
		name   string
		filter isolation.Properties
		want   []string
	}{
		{"one key", isolation.Properties{k1: group}, []string{a.Handle(), w.Handle()}},
		{"two keys", isolation.Properties{k1: group, k2: "worker"}, []string{w.Handle()}},
		{"no match", isolation.Properties{k1: group, k2: "db"}, nil},
		{"absent key", isolation.Properties{k1: group, "conformance.absent": ""}, nil},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, err := b.List(ctx, tc.filter)
			if err != nil {
				t.Fatalf("List(%v): %v", tc.filter, err)
			}
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(names(got), want) {
				t.Fatalf("List(%v) = %v, want %v", tc.filter, names(got), want)
			}
		})
	}
}

func testCreateDuplicate(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	spec := s.spec(t)
	spec.Properties = isolation.Properties{"conformance.first": "yes"}
	s.createSpec(t, b, spec)
	dup := spec
	dup.Properties = isolation.Properties{"conformance.first": "no"}
	if _, err := b.Create(ctx, dup); !isolation.IsAlreadyExists(err) {
		t.Fatalf("second Create(%q): %v, want ErrAlreadyExists", spec.Handle, err)
	}
	c, err := b.Lookup(ctx, spec.Handle)
	if err != nil {
		t.Fatalf("Lookup after a refused duplicate: %v", err)
	}
	props, err := c.Properties(ctx)
	if err != nil {
		t.Fatalf("Properties: %v", err)
	}
	if props["conformance.first"] != "yes" {
		t.Fatalf("the refused duplicate changed the container: properties %v", props)
	}
}

func testCreateConcurrentSame(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	spec := s.spec(t)
	s.destroyAtCleanup(t, b, spec.Handle)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = b.Create(ctx, spec) })
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !isolation.IsAlreadyExists(err):
			t.Errorf("Create #%d of one handle: %v, want nil or ErrAlreadyExists", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent Creates of one handle succeeded, want exactly 1", wins, n)
	}
}

func testCreateInvalidHandle(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	cases := map[string]string{
		"empty":     "",
		"space":     "has space",
		"slash":     "slash/inside",
		"dotdot":    "..",
		"dot":       ".",
		"too_long":  strings.Repeat("h", 129),
		"non_ascii": "h\u00e4ndle",
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			spec := s.spec(t)
			spec.Handle = cases[name]
			_, err := b.Create(ctx, spec)
			if err == nil {
				s.destroyAtCleanup(t, b, spec.Handle)
			}
			expectInvalid(t, err, "Handle")
		})
	}
}

func testCreateInvalidSpec(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	cases := []struct {
		name   string
		field  string
		mutate func(*isolation.ContainerSpec)
	}{
		{"env_without_equals", "Env", func(c *isolation.ContainerSpec) { c.Env = []string{"CONFORMANCE_NO_EQUALS"} }},
		{"cpu_weight_over_100", "CPUWeight", func(c *isolation.ContainerSpec) { c.Limits.CPUWeight = 101 }},
		{"netin_container_port_zero", "ContainerPort", func(c *isolation.ContainerSpec) {
			c.NetIn = []isolation.NetIn{{ContainerPort: 0}}
		}},
		{"netin_host_port_too_big", "HostPort", func(c *isolation.ContainerSpec) {
			c.NetIn = []isolation.NetIn{{HostPort: 70000, ContainerPort: 8080}}
		}},
		{"unknown_network", "Network", func(c *isolation.ContainerSpec) { c.Network = "conformance-bogus" }},
		{"relative_bind_mount_dst", "DstPath", func(c *isolation.ContainerSpec) {
			c.BindMounts = []isolation.BindMount{{SrcPath: t.TempDir(), DstPath: "relative/dst"}}
		}},
		{"rootfs_not_a_uri", "RootFS", func(c *isolation.ContainerSpec) { c.RootFS = "no-scheme-at-all" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := s.spec(t)
			tc.mutate(&spec)
			_, err := b.Create(ctx, spec)
			if err == nil {
				s.destroyAtCleanup(t, b, spec.Handle)
			}
			expectInvalid(t, err, tc.field)
			if _, lerr := b.Lookup(ctx, spec.Handle); !isolation.IsNotFound(lerr) {
				t.Fatalf("Lookup after a refused Create: %v, want ErrNotFound", lerr)
			}
		})
	}
}

// An unknown rootfs scheme is a well-formed request this backend cannot honour, so it is
// ErrUnsupported (as the RootFS field's contract says), not ErrInvalidSpec.
func testCreateUnsupportedRootFS(t *testing.T, s *suite) {
	b := s.backend(t)
	spec := s.spec(t)
	spec.RootFS = "conformance-bogus-scheme:///image"
	_, err := b.Create(s.ctx(t), spec)
	if err == nil {
		s.destroyAtCleanup(t, b, spec.Handle)
	}
	if !isolation.IsUnsupported(err) {
		t.Fatalf("Create with RootFS %q: %v, want ErrUnsupported", spec.RootFS, err)
	}
}

func testRunExitCodes(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	for _, code := range []int{0, 1, 3, 42, 255} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			s.start(t, c, Exit(code), runOpts{}).expectExit(t, code)
		})
	}
}

func testRunStdio(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	const out, errText = "to stdout\nline two\n", "to stderr\n"
	code, stdout, stderr := s.runToExit(t, c, Echo(out, errText), runOpts{})
	if code != 0 {
		t.Fatalf("echo exited %d", code)
	}
	if stdout != out || stderr != errText {
		t.Fatalf("stdout %q, stderr %q; want %q and %q, each on its own stream", stdout, stderr, out, errText)
	}
}

func testRunStdin(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	// Larger than a pipe buffer, with every byte value, so the plumbing must stream.
	var b strings.Builder
	b.WriteString("first line\nsecond line\n")
	for i := range 200 << 10 {
		b.WriteByte(byte(i*7 + i/256))
	}
	payload := b.String()
	code, stdout, stderr := s.runToExit(t, c, Cat(), runOpts{stdin: strings.NewReader(payload)})
	if code != 0 {
		t.Fatalf("cat exited %d (stderr %q)", code, stderr)
	}
	if stdout != payload {
		t.Fatalf("cat echoed %d bytes, want the %d bytes of stdin unchanged", len(stdout), len(payload))
	}
}

func testRunEnv(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t), func(spec *isolation.ContainerSpec) {
		spec.Env = []string{"CONFORMANCE_A=container-a", "CONFORMANCE_B=container-b"}
	})
	env := []string{"CONFORMANCE_B=process-b", "CONFORMANCE_C=process-c"}
	cases := []struct{ name, want string }{
		{"CONFORMANCE_A", "container-a"},
		{"CONFORMANCE_B", "process-b"},
		{"CONFORMANCE_C", "process-c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.output(t, c, PrintEnv(tc.name), runOpts{env: env}); got != tc.want+"\n" {
				t.Fatalf("printenv %s = %q, want %q", tc.name, got, tc.want+"\n")
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		code, stdout, _ := s.runToExit(t, c, PrintEnv("CONFORMANCE_UNSET"), runOpts{env: env})
		if code != 1 {
			t.Fatalf("printenv of an unset variable exited %d (stdout %q), want 1", code, stdout)
		}
	})
}

func testRunWorkingDir(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	const dir = "/conformance/wd"
	s.mkdir(t, c, dir)
	if got := s.output(t, c, PrintCwd(), runOpts{dir: dir}); got != dir+"\n" {
		t.Fatalf("pwd with Dir %q printed %q", dir, got)
	}
	s.output(t, c, WriteFile("relative.txt", "written relative to Dir"), runOpts{dir: dir})
	s.expectFile(t, c, dir+"/relative.txt", "written relative to Dir")
}

// Run's context bounds starting the process, not its life: an agent starts long-running work
// with a request-scoped context.
func testRunOutlivesContext(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	ctx, cancel := context.WithCancel(s.ctx(t))
	out := &syncBuffer{}
	p, err := c.Run(ctx, s.h.Program(Sleep()), isolation.ProcessIO{Stdout: out})
	if err != nil {
		cancel()
		t.Fatalf("Run: %v", err)
	}
	cancel()
	(&proc{Process: p, prog: Sleep(), stdout: out, stderr: &syncBuffer{}}).waitReady(t)
	expectRunning(t, p, "after the context given to Run was cancelled")
	if err := p.Signal(s.ctx(t), isolation.SignalTerminate); err != nil {
		t.Fatalf("Signal(terminate): %v", err)
	}
	if code := waitExit(t, p); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
}

func testRunDuplicateID(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	first := s.start(t, c, Sleep(), runOpts{id: "conformance-dup"})
	first.waitReady(t)
	_, err := s.tryStart(t, c, Exit(0), runOpts{id: "conformance-dup"})
	if !isolation.IsAlreadyExists(err) {
		t.Errorf("Run with the id of a running process: %v, want ErrAlreadyExists", err)
	}
	if err := first.Signal(s.ctx(t), isolation.SignalKill); err != nil {
		t.Fatalf("Signal(kill): %v", err)
	}
	first.expectExit(t, 137)
}

func testRunInvalidSpec(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	cases := []struct {
		name   string
		field  string
		mutate func(*isolation.ProcessSpec)
	}{
		{"empty_path", "Path", func(p *isolation.ProcessSpec) { p.Path = "" }},
		{"env_without_equals", "Env", func(p *isolation.ProcessSpec) { p.Env = append(p.Env, "CONFORMANCE_NO_EQUALS") }},
		{"relative_dir", "Dir", func(p *isolation.ProcessSpec) { p.Dir = "relative/dir" }},
		{"bad_id", "ID", func(p *isolation.ProcessSpec) { p.ID = "bad id/with slash" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := s.h.Program(Exit(0))
			tc.mutate(&spec)
			p, err := c.Run(s.ctx(t), spec, isolation.ProcessIO{})
			if err == nil {
				waitExit(t, p)
			}
			expectInvalid(t, err, tc.field)
		})
	}
}

func testWaitContext(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, Sleep(), runOpts{})
	p.waitReady(t)
	expectRunning(t, p, "while Wait's context expired")
	if err := p.Signal(s.ctx(t), isolation.SignalKill); err != nil {
		t.Fatalf("Signal(kill) after an expired Wait: %v", err)
	}
	p.expectExit(t, 137)
}

func testSignalTerminate(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, Sleep(), runOpts{})
	p.waitReady(t)
	if err := p.Signal(s.ctx(t), isolation.SignalTerminate); err != nil {
		t.Fatalf("Signal(terminate): %v", err)
	}
	p.expectExit(t, 143)
}

func testSignalKill(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, IgnoreTerm(), runOpts{})
	p.waitReady(t)
	if err := p.Signal(s.ctx(t), isolation.SignalTerminate); err != nil {
		t.Fatalf("Signal(terminate): %v", err)
	}
	expectRunning(t, p, "after terminate, which it ignores")
	if err := p.Signal(s.ctx(t), isolation.SignalKill); err != nil {
		t.Fatalf("Signal(kill): %v", err)
	}
	p.expectExit(t, 137)
}

func testSignalExited(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, Exit(0), runOpts{})
	p.expectExit(t, 0)
	for _, sig := range []isolation.Signal{isolation.SignalTerminate, isolation.SignalKill} {
		if err := p.Signal(s.ctx(t), sig); !isolation.IsNotFound(err) {
			t.Errorf("Signal(%d) of an exited process: %v, want ErrNotFound", sig, err)
		}
	}
}

func testAttachRunning(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	const id = "conformance-attach"
	p := s.start(t, c, Sleep(), runOpts{id: id})
	if p.ID() != id {
		t.Fatalf("Run with ID %q returned a process with ID %q", id, p.ID())
	}
	p.waitReady(t)
	a, err := c.Attach(s.ctx(t), id, isolation.ProcessIO{})
	if err != nil {
		t.Fatalf("Attach(%q): %v", id, err)
	}
	if a.ID() != id {
		t.Fatalf("Attach(%q).ID() = %q", id, a.ID())
	}
	if err := a.Signal(s.ctx(t), isolation.SignalTerminate); err != nil {
		t.Fatalf("Signal(terminate) through the attached process: %v", err)
	}
	if code := waitExit(t, a); code != 143 {
		t.Fatalf("attached Wait = %d, want 143", code)
	}
	p.expectExit(t, 143)
}

func testAttachExited(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	const id = "conformance-exited"
	s.start(t, c, Exit(7), runOpts{id: id}).expectExit(t, 7)
	a, err := c.Attach(s.ctx(t), id, isolation.ProcessIO{})
	if err != nil {
		t.Fatalf("Attach(%q) to an exited process: %v", id, err)
	}
	if code := waitExit(t, a); code != 7 {
		t.Fatalf("Wait of a process attached after it exited = %d, want 7", code)
	}
}

func testAttachUnknown(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	if _, err := c.Attach(s.ctx(t), "conformance-never-run", isolation.ProcessIO{}); !isolation.IsNotFound(err) {
		t.Fatalf("Attach of an unknown id: %v, want ErrNotFound", err)
	}
}

// streamTree is the tree the Stream tests stream in and expect back.
func streamTree() []tarMember {
	bin := make([]byte, 10<<10)
	for i := range bin {
		bin[i] = byte(i * 31)
	}
	return []tarMember{
		{name: "d/", typ: tar.TypeDir, mode: 0o750},
		{name: "d/a.txt", typ: tar.TypeReg, mode: 0o640, body: "alpha\n"},
		{name: "d/run.sh", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\nexit 0\n"},
		{name: "d/empty/", typ: tar.TypeDir, mode: 0o700},
		{name: "d/sub/", typ: tar.TypeDir, mode: 0o755},
		{name: "d/sub/b.bin", typ: tar.TypeReg, mode: 0o600, body: string(bin)},
		{name: "d/sub/zero", typ: tar.TypeReg, mode: 0o644},
	}
}

// compareTrees checks got has exactly want's names, types and contents (and modes if asked).
func compareTrees(t *testing.T, got, want []tarMember, modes bool) {
	t.Helper()
	index := map[string]tarMember{}
	for _, m := range got {
		if _, dup := index[m.name]; dup {
			t.Errorf("StreamOut archive holds %q twice", m.name)
		}
		index[m.name] = m
	}
	for _, w := range want {
		w.name = strings.TrimSuffix(w.name, "/")
		g, ok := index[w.name]
		if !ok {
			t.Errorf("StreamOut archive lacks %q (has %v)", w.name, got)
			continue
		}
		delete(index, w.name)
		if g.typ != w.typ {
			t.Errorf("%q: type %q, want %q", w.name, g.typ, w.typ)
		}
		if g.body != w.body {
			t.Errorf("%q: %d bytes differing from the %d streamed in", w.name, len(g.body), len(w.body))
		}
		if modes && g.mode&0o777 != w.mode {
			t.Errorf("%q: mode %o, want %o", w.name, g.mode&0o777, w.mode)
		}
	}
	for name := range index {
		t.Errorf("StreamOut archive holds %q, which was never streamed in", name)
	}
}

func testStreamRoundTrip(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	s.mkdir(t, c, "/conformance/rt")
	s.streamIn(t, c, "/conformance/rt", streamTree())
	compareTrees(t, s.streamOut(t, c, "/conformance/rt/d"), streamTree(), false)
}

func testStreamModes(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	s.mkdir(t, c, "/conformance/modes")
	s.streamIn(t, c, "/conformance/modes", streamTree())
	compareTrees(t, s.streamOut(t, c, "/conformance/modes/d"), streamTree(), true)
}

func testStreamFile(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	s.mkdir(t, c, "/conformance/file")
	s.streamIn(t, c, "/conformance/file", streamTree())
	got := s.streamOut(t, c, "/conformance/file/d/a.txt")
	if len(got) != 1 || got[0].name != "a.txt" || got[0].typ != tar.TypeReg || got[0].body != "alpha\n" {
		t.Fatalf("StreamOut of one file = %v; want the single regular file a.txt holding %q", got, "alpha\n")
	}
}

func testStreamProgramSeesFiles(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	s.mkdir(t, c, "/conformance/seen")
	s.streamIn(t, c, "/conformance/seen", streamTree())
	s.expectFile(t, c, "/conformance/seen/d/a.txt", "alpha\n")
	if got, want := s.listDir(t, c, "/conformance/seen/d"), []string{"a.txt", "empty", "run.sh", "sub"}; !slices.Equal(got, want) {
		t.Fatalf("ListDir of the streamed directory = %v, want %v", got, want)
	}
	s.output(t, c, WriteFile("/conformance/seen/d/from-program.txt", "written in the container"), runOpts{})
	got := s.streamOut(t, c, "/conformance/seen/d/from-program.txt")
	if len(got) != 1 || got[0].body != "written in the container" {
		t.Fatalf("StreamOut of a file a program wrote = %v", got)
	}
}

func testStreamMissing(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	rc, err := c.StreamOut(s.ctx(t), "/conformance/does-not-exist-"+uniq(t))
	if err == nil {
		rc.Close()
	}
	if !isolation.IsNotFound(err) {
		t.Fatalf("StreamOut of a missing path: %v, want ErrNotFound", err)
	}
}

// Archive member names are rooted at the destination: "../x" and "/x" land at dst/x. A name
// that climbs in its middle may be clamped or refused, but never lands above dst.
func testStreamEscape(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	const jail = "/conformance/jail"
	dst := jail + "/inner"
	s.mkdir(t, c, dst)
	tag := uniq(t)
	err := c.StreamIn(s.ctx(t), dst, strings.NewReader(string(buildTar(t, []tarMember{
		{name: "../escape-dotdot-" + tag, typ: tar.TypeReg, mode: 0o644, body: "dotdot"},
		{name: "/escape-abs-" + tag, typ: tar.TypeReg, mode: 0o644, body: "abs"},
		{name: "../../../../escape-deep-" + tag, typ: tar.TypeReg, mode: 0o644, body: "deep"},
	}))))
	if err != nil {
		t.Fatalf("StreamIn of leading ../ and absolute names: %v, want them unpacked inside the destination", err)
	}
	s.expectFile(t, c, dst+"/escape-dotdot-"+tag, "dotdot")
	s.expectFile(t, c, dst+"/escape-abs-"+tag, "abs")
	s.expectFile(t, c, dst+"/escape-deep-"+tag, "deep")
	if err := c.StreamIn(s.ctx(t), dst, strings.NewReader(string(buildTar(t, []tarMember{
		{name: "a/../../escape-mid-" + tag, typ: tar.TypeReg, mode: 0o644, body: "mid"},
	})))); err != nil && !isolation.IsInvalidSpec(err) {
		t.Fatalf("StreamIn of a name climbing in its middle: %v, want nil or ErrInvalidSpec", err)
	}
	for _, dir := range []string{jail, "/conformance", ""} {
		for _, n := range []string{"escape-dotdot-", "escape-abs-", "escape-deep-", "escape-mid-"} {
			s.expectNoFile(t, c, dir+"/"+n+tag)
		}
	}
	if got := s.listDir(t, c, jail); !slices.Equal(got, []string{"inner"}) {
		t.Fatalf("%s holds %v after the escapes, want only [inner]", jail, got)
	}
}

// A symlink in an archive may point anywhere, but following it resolves inside the container:
// "up" -> "../../../../.." then "up/x" lands at the container's /x, never the host's.
func testStreamSymlinkEscape(t *testing.T, s *suite) {
	b := s.backend(t)
	c := s.create(t, b)
	const dst = "/conformance/sym"
	s.mkdir(t, c, dst)
	tag := uniq(t)
	s.streamIn(t, c, dst, []tarMember{
		{name: "up", typ: tar.TypeSymlink, linkname: "../../../../../../.."},
		{name: "root", typ: tar.TypeSymlink, linkname: "/"},
		{name: "up/escape-rel-" + tag, typ: tar.TypeReg, mode: 0o644, body: "through a relative link"},
		{name: "root/escape-root-" + tag, typ: tar.TypeReg, mode: 0o644, body: "through an absolute link"},
	})
	s.expectFile(t, c, "/escape-rel-"+tag, "through a relative link")
	s.expectFile(t, c, "/escape-root-"+tag, "through an absolute link")
	// A backend with a host directory must not have written next to it or at the host's root.
	info, err := c.Info(s.ctx(t))
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	hostDirs := []string{string(filepath.Separator)}
	if info.ContainerPath != "" {
		hostDirs = append(hostDirs, filepath.Dir(info.ContainerPath), info.ContainerPath)
	}
	for _, dir := range hostDirs {
		for _, n := range []string{"escape-rel-", "escape-root-"} {
			if _, err := os.Lstat(filepath.Join(dir, n+tag)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("host path %s exists (or cannot be checked: %v): a symlink escaped the container",
					filepath.Join(dir, n+tag), err)
			}
		}
	}
}

func testStopGrace(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, Sleep(), runOpts{})
	p.waitReady(t)
	start := time.Now()
	if err := c.Stop(s.ctx(t), exitTimeout, false); err != nil {
		t.Fatalf("Stop(grace %v): %v", exitTimeout, err)
	}
	if took := time.Since(start); took >= exitTimeout {
		t.Fatalf("Stop took %v although the process exited on terminate", took)
	}
	p.expectExit(t, 143)
}

func testStopAfterGrace(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	p := s.start(t, c, IgnoreTerm(), runOpts{})
	p.waitReady(t)
	start := time.Now()
	if err := c.Stop(s.ctx(t), stopGrace, false); err != nil {
		t.Fatalf("Stop(grace %v): %v", stopGrace, err)
	}
	p.expectExit(t, 137)
	if took := time.Since(start); took < stopGrace {
		t.Fatalf("the process was killed %v after Stop, before the %v grace ended", took, stopGrace)
	}
}

func testStopKill(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	sleeper := s.start(t, c, Sleep(), runOpts{})
	stubborn := s.start(t, c, IgnoreTerm(), runOpts{})
	sleeper.waitReady(t)
	stubborn.waitReady(t)
	if err := c.Stop(s.ctx(t), time.Hour, true); err != nil {
		t.Fatalf("Stop(kill): %v", err)
	}
	sleeper.expectExit(t, 137)
	stubborn.expectExit(t, 137)
}

func testStopStopped(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t))
	ctx := s.ctx(t)
	s.mkdir(t, c, "/conformance/kept")
	s.streamIn(t, c, "/conformance/kept", []tarMember{{name: "f.txt", typ: tar.TypeReg, mode: 0o644, body: "kept"}})
	if err := c.Stop(ctx, stopGrace, false); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := s.tryStart(t, c, Exit(0), runOpts{}); !isolation.IsStopped(err) {
		t.Errorf("Run after Stop: %v, want ErrStopped", err)
	}
	err := c.StreamIn(ctx, "/conformance/kept", strings.NewReader(string(buildTar(t, []tarMember{
		{name: "g.txt", typ: tar.TypeReg, mode: 0o644, body: "late"},
	}))))
	if !isolation.IsStopped(err) {
		t.Errorf("StreamIn after Stop: %v, want ErrStopped", err)
	}
	got := s.streamOut(t, c, "/conformance/kept/f.txt")
	if len(got) != 1 || got[0].body != "kept" {
		t.Errorf("StreamOut after Stop = %v, want f.txt holding %q", got, "kept")
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info after Stop: %v", err)
	}
	if info.State != isolation.StateStopped {
		t.Errorf("Info.State after Stop = %q, want %q", info.State, isolation.StateStopped)
	}
	if err := c.Stop(ctx, stopGrace, false); err != nil {
		t.Errorf("a second Stop: %v, want nil", err)
	}
}

func testInfoState(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t), func(spec *isolation.ContainerSpec) {
		spec.Properties = isolation.Properties{"conformance.info": "yes", "conformance.empty": ""}
	})
	ctx := s.ctx(t)
	p := s.start(t, c, Sleep(), runOpts{id: "conformance-info"})
	p.waitReady(t)
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Handle != c.Handle() || info.State != isolation.StateActive {
		t.Errorf("Info handle %q state %q, want %q and %q", info.Handle, info.State, c.Handle(), isolation.StateActive)
	}
	for k, v := range map[string]string{"conformance.info": "yes", "conformance.empty": ""} {
		if got, ok := info.Properties[k]; !ok || got != v {
			t.Errorf("Info.Properties[%q] = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if !slices.Contains(info.ProcessIDs, "conformance-info") {
		t.Errorf("Info.ProcessIDs = %v, want it to include the running process", info.ProcessIDs)
	}
	if err := p.Signal(ctx, isolation.SignalKill); err != nil {
		t.Fatalf("Signal(kill): %v", err)
	}
	p.expectExit(t, 137)
	if info, err = c.Info(ctx); err != nil {
		t.Fatalf("Info: %v", err)
	}
	if slices.Contains(info.ProcessIDs, "conformance-info") {
		t.Errorf("Info.ProcessIDs = %v still lists a process that exited", info.ProcessIDs)
	}
}

func testInfoMappedPorts(t *testing.T, s *suite) {
	c := s.create(t, s.backend(t), func(spec *isolation.ContainerSpec) {
		spec.NetIn = []isolation.NetIn{{ContainerPort: 8080}, {ContainerPort: 9090}}
	})
	info, err := c.Info(s.ctx(t))
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	got := map[uint32]uint32{}
	hostPorts := map[uint32]bool{}
	for _, m := range info.MappedPorts {
		got[m.ContainerPort] = m.HostPort
		if m.HostPort == 0 || hostPorts[m.HostPort] {
			t.Errorf("MappedPorts %v: host port %d is zero or mapped twice", info.MappedPorts, m.HostPort)
		}
		hostPorts[m.HostPort] = true
	}
	if len(info.MappedPorts) != 2 || got[8080] == 0 || got[9090] == 0 {
		t.Fatalf("MappedPorts = %v, want container ports 8080 and 9090 each on an allocated host port", info.MappedPorts)
	}
}

func testProperties(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	c := s.create(t, b, func(spec *isolation.ContainerSpec) {
		spec.Properties = isolation.Properties{"conformance.phase": "old"}
	})
	if err := c.SetProperty(ctx, "conformance.phase", "new"); err != nil {
		t.Fatalf("SetProperty: %v", err)
	}
	if err := c.SetProperty(ctx, "conformance.added", "x"); err != nil {
		t.Fatalf("SetProperty of a new key: %v", err)
	}
	props, err := c.Properties(ctx)
	if err != nil {
		t.Fatalf("Properties: %v", err)
	}
	if props["conformance.phase"] != "new" || props["conformance.added"] != "x" {
		t.Fatalf("Properties = %v after SetProperty", props)
	}
	for _, tc := range []struct {
		filter isolation.Properties
		want   []string
	}{
		{isolation.Properties{"conformance.phase": "new"}, []string{c.Handle()}},
		{isolation.Properties{"conformance.phase": "old"}, nil},
		{isolation.Properties{"conformance.added": "x"}, []string{c.Handle()}},
	} {
		got, err := b.List(ctx, tc.filter)
		if err != nil {
			t.Fatalf("List(%v): %v", tc.filter, err)
		}
		if !slices.Equal(names(got), tc.want) {
			t.Errorf("List(%v) = %v after SetProperty, want %v", tc.filter, names(got), tc.want)
		}
	}
}

func testMetricsKnown(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	a := s.create(t, b)
	other := s.create(t, b)
	if _, err := a.Metrics(ctx); err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	missing := "conformance-missing-" + uniq(t)
	bulk, err := b.BulkMetrics(ctx, []string{a.Handle(), other.Handle(), missing})
	if err != nil {
		t.Fatalf("BulkMetrics: %v", err)
	}
	if got := slices.Sorted(maps.Keys(bulk)); !slices.Equal(got, names([]isolation.Container{a, other})) {
		t.Fatalf("BulkMetrics keys = %v, want exactly the two known handles", got)
	}
	if err := b.Destroy(ctx, other.Handle()); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if bulk, err = b.BulkMetrics(ctx, []string{a.Handle(), other.Handle()}); err != nil {
		t.Fatalf("BulkMetrics: %v", err)
	}
	if _, ok := bulk[other.Handle()]; ok || len(bulk) != 1 {
		t.Fatalf("BulkMetrics after Destroy has keys %v, want only %q", slices.Sorted(maps.Keys(bulk)), a.Handle())
	}
	if _, err := other.Metrics(ctx); !isolation.IsNotFound(err) {
		t.Fatalf("Metrics of a destroyed container: %v, want ErrNotFound", err)
	}
}

func testMetricsLimit(t *testing.T, s *suite) {
	const limit = 64 << 20
	c := s.create(t, s.backend(t), func(spec *isolation.ContainerSpec) { spec.Limits.MemoryBytes = limit })
	m, err := c.Metrics(s.ctx(t))
	if err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	if m.MemoryLimitBytes != limit {
		t.Fatalf("Metrics.MemoryLimitBytes = %d, want the %d the container was created with", m.MemoryLimitBytes, limit)
	}
}

func testDestroy(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	c := s.create(t, b)
	p := s.start(t, c, IgnoreTerm(), runOpts{})
	p.waitReady(t)
	if err := b.Destroy(ctx, c.Handle()); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	waitExit(t, p)
	if err := b.Destroy(ctx, c.Handle()); err != nil {
		t.Fatalf("second Destroy: %v, want nil (idempotent)", err)
	}
	if err := b.Destroy(ctx, "conformance-never-created-"+uniq(t)); err != nil {
		t.Fatalf("Destroy of an unknown handle: %v, want nil", err)
	}
	if _, err := b.Lookup(ctx, c.Handle()); !isolation.IsNotFound(err) {
		t.Fatalf("Lookup after Destroy: %v, want ErrNotFound", err)
	}
	if _, err := c.Info(ctx); !isolation.IsNotFound(err) {
		t.Fatalf("Info of a destroyed container: %v, want ErrNotFound", err)
	}
	all, err := b.List(ctx, nil)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if slices.Contains(names(all), c.Handle()) {
		t.Fatalf("List after Destroy still has %q", c.Handle())
	}
}

func testConcurrent(t *testing.T, s *suite) {
	b := s.backend(t)
	ctx := s.ctx(t)
	const n = 10
	group := isolation.Properties{"conformance.concurrent": uniq(t)}
	specs := make([]isolation.ContainerSpec, n)
	for i := range specs {
		specs[i] = s.spec(t)
		specs[i].Properties = group
		s.destroyAtCleanup(t, b, specs[i].Handle)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range specs {
		wg.Go(func() { _, errs[i] = b.Create(ctx, specs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Create: %v", err)
	}
	listed, err := b.List(ctx, group)
	if err != nil || len(listed) != n {
		t.Fatalf("List after %d concurrent Creates: %d containers, %v", n, len(listed), err)
	}
	for i := range specs {
		wg.Go(func() { errs[i] = b.Destroy(ctx, specs[i].Handle) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Destroy: %v", err)
	}
	if listed, err = b.List(ctx, group); err != nil || len(listed) != 0 {
		t.Fatalf("List after concurrent Destroys: %v, %v; want none", names(listed), err)
	}
}

// reopen returns the harness's reopened backend, skipping when the harness has none.
func (s *suite) reopen(t *testing.T, b isolation.Backend) isolation.Backend {
	t.Helper()
	if s.h.Reopen == nil {
		t.Skip("Harness.Reopen is nil: the backend does not claim to survive a restart")
	}
	nb := s.h.Reopen(t, b)
	if nb == nil {
		t.Fatal("Harness.Reopen returned nil")
	}
	return nb
}

func testReopenContainer(t *testing.T, s *suite) {
	if s.h.Reopen == nil {
		t.Skip("Harness.Reopen is nil: the backend does not claim to survive a restart")
	}
	b := s.backend(t)
	props := isolation.Properties{"conformance.reopen": uniq(t)}
	c := s.create(t, b, func(spec *isolation.ContainerSpec) { spec.Properties = props })
	s.mkdir(t, c, "/conformance/before")
	b2 := s.reopen(t, b)
	ctx := s.ctx(t)
	c2, err := b2.Lookup(ctx, c.Handle())
	if err != nil {
		t.Fatalf("Lookup after reopen: %v", err)
	}
	got, err := c2.Properties(ctx)
	if err != nil || got["conformance.reopen"] != props["conformance.reopen"] {
		t.Fatalf("Properties after reopen = %v, %v; want %v", got, err, props)
	}
	listed, err := b2.List(ctx, props)
	if err != nil || !slices.Equal(names(listed), []string{c.Handle()}) {
		t.Fatalf("List(%v) after reopen = %v, %v", props, names(listed), err)
	}
	if got := s.listDir(t, c2, "/conformance"); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("/conformance after reopen holds %v, want [before]", got)
	}
}

func testReopenProcess(t *testing.T, s *suite) {
	if s.h.Reopen == nil {
		t.Skip("Harness.Reopen is nil: the backend does not claim to survive a restart")
	}
	b := s.backend(t)
	c := s.create(t, b)
	survivor := s.start(t, c, Sleep(), runOpts{id: "conformance-survivor"})
	survivor.waitReady(t)
	s.start(t, c, Exit(5), runOpts{id: "conformance-finished"}).expectExit(t, 5)
	b2 := s.reopen(t, b)
	ctx := s.ctx(t)
	c2, err := b2.Lookup(ctx, c.Handle())
	if err != nil {
		t.Fatalf("Lookup after reopen: %v", err)
	}
	info, err := c2.Info(ctx)
	if err != nil {
		t.Fatalf("Info after reopen: %v", err)
	}
	if !slices.Contains(info.ProcessIDs, "conformance-survivor") {
		t.Errorf("Info.ProcessIDs after reopen = %v, want the surviving process", info.ProcessIDs)
	}
	finished, err := c2.Attach(ctx, "conformance-finished", isolation.ProcessIO{})
	if err != nil {
		t.Fatalf("Attach to a process that exited before the reopen: %v", err)
	}
	if code := waitExit(t, finished); code != 5 {
		t.Errorf("Wait of a process that exited before the reopen = %d, want 5", code)
	}
	a, err := c2.Attach(ctx, "conformance-survivor", isolation.ProcessIO{})
	if err != nil {
		t.Fatalf("Attach to a running process after reopen: %v", err)
	}
	expectRunning(t, a, "after the backend reopened")
	if err := a.Signal(ctx, isolation.SignalTerminate); err != nil {
		t.Fatalf("Signal(terminate) after reopen: %v", err)
	}
	if code := waitExit(t, a); code != 143 {
		t.Fatalf("Wait after reopen = %d, want 143", code)
	}
}
