package isolationtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

func newTestMemory(t *testing.T, mutate func(*MemoryConfig)) *Memory {
	t.Helper()
	cfg := DefaultMemoryConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := NewMemory(cfg)
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	t.Cleanup(func() { destroyAll(t, m) })
	return m
}

func mustCreate(t *testing.T, m *Memory, spec isolation.ContainerSpec) isolation.Container {
	t.Helper()
	if spec.RootFS == "" {
		spec.RootFS = MemoryRootFS
	}
	c, err := m.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create(%q): %v", spec.Handle, err)
	}
	return c
}

func TestMemoryConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*MemoryConfig)
		want   string // "" = valid
	}{
		{"default", func(*MemoryConfig) {}, ""},
		{"no memory", func(c *MemoryConfig) { c.Capacity.MemoryBytes = 0 }, "MemoryBytes"},
		{"no disk", func(c *MemoryConfig) { c.Capacity.DiskBytes = 0 }, "DiskBytes"},
		{"no containers", func(c *MemoryConfig) { c.Capacity.MaxContainers = 0 }, "MaxContainers"},
		{"port range reversed", func(c *MemoryConfig) { c.PortRangeStart, c.PortRangeEnd = 9, 8 }, "port range"},
		{"port range too high", func(c *MemoryConfig) { c.PortRangeEnd = 70000 }, "port range"},
		{"bad host ip", func(c *MemoryConfig) { c.HostIP = "nope" }, "HostIP"},
		{"ipv6 subnet", func(c *MemoryConfig) { c.ContainerSubnet = "fd00::/64" }, "ContainerSubnet"},
		{"subnet too small", func(c *MemoryConfig) { c.ContainerSubnet = "127.0.0.0/31" }, "ContainerSubnet"},
		{"scheme with colon", func(c *MemoryConfig) { c.RootFSSchemes = []string{"docker:"} }, "RootFSSchemes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultMemoryConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.want)
			}
			if _, err := NewMemory(cfg); (err == nil) != (tc.want == "") {
				t.Fatalf("NewMemory agrees not with Validate: %v", err)
			}
		})
	}
}

func TestMemoryRootFS(t *testing.T) {
	m := newTestMemory(t, nil)
	cases := []struct {
		rootfs string
		check  func(error) bool
	}{
		{"preloaded:cflinuxfs4", func(err error) bool { return err == nil }},
		{"docker:///busybox", func(err error) bool { return err == nil }},
		{"oci://registry/image", func(err error) bool { return err == nil }},
		{"preloaded:windows2016", isolation.IsUnsupported},
		{"ftp://x", isolation.IsUnsupported},
		{"", isolation.IsInvalidSpec},
		{":no-scheme", isolation.IsInvalidSpec},
	}
	for i, tc := range cases {
		_, err := m.Create(t.Context(), isolation.ContainerSpec{Handle: fmt.Sprint("r", i), RootFS: tc.rootfs})
		if !tc.check(err) {
			t.Errorf("Create with RootFS %q: %v", tc.rootfs, err)
		}
	}
}

func TestMemoryCapacity(t *testing.T) {
	m := newTestMemory(t, func(c *MemoryConfig) {
		c.Capacity = isolation.Capacity{MemoryBytes: 1000, DiskBytes: 500, MaxContainers: 3}
	})
	ctx := t.Context()
	mustCreate(t, m, isolation.ContainerSpec{Handle: "a", Limits: isolation.Limits{MemoryBytes: 600, DiskBytes: 100}})
	cases := []struct {
		handle string
		limits isolation.Limits
		want   string // "" = fits
	}{
		{"too-much-memory", isolation.Limits{MemoryBytes: 401}, "memory"},
		{"too-much-disk", isolation.Limits{DiskBytes: 401}, "disk"},
		{"fits", isolation.Limits{MemoryBytes: 400, DiskBytes: 400}, ""},
		{"unlimited", isolation.Limits{}, ""},
		{"one-too-many", isolation.Limits{}, "containers"},
	}
	for _, tc := range cases {
		_, err := m.Create(ctx, isolation.ContainerSpec{Handle: tc.handle, RootFS: MemoryRootFS, Limits: tc.limits})
		if tc.want == "" {
			if err != nil {
				t.Fatalf("Create(%s): %v", tc.handle, err)
			}
			continue
		}
		if !isolation.IsInsufficientResources(err) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Create(%s): %v, want ErrInsufficientResources naming %s", tc.handle, err, tc.want)
		}
	}
	if m.Len() != 3 {
		t.Fatalf("Len = %d, want 3", m.Len())
	}
	// Destroying returns what the container reserved.
	if err := m.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, m, isolation.ContainerSpec{Handle: "b", Limits: isolation.Limits{MemoryBytes: 600, DiskBytes: 100}})
}

func TestMemoryPorts(t *testing.T) {
	m := newTestMemory(t, func(c *MemoryConfig) { c.PortRangeStart, c.PortRangeEnd = 40000, 40002 })
	ctx := t.Context()
	ports := func(c isolation.Container) []uint32 {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint32
		for _, p := range info.MappedPorts {
			out = append(out, p.HostPort)
		}
		return out
	}
	a := mustCreate(t, m, isolation.ContainerSpec{Handle: "a", NetIn: []isolation.NetIn{{ContainerPort: 8080}, {ContainerPort: 8081}}})
	if got := ports(a); !slices.Equal(got, []uint32{40000, 40001}) {
		t.Fatalf("host ports %v, want [40000 40001]", got)
	}
	// An explicit host port outside the range is kept unique too.
	mustCreate(t, m, isolation.ContainerSpec{Handle: "fixed", NetIn: []isolation.NetIn{{HostPort: 8000, ContainerPort: 80}}})
	_, err := m.Create(ctx, isolation.ContainerSpec{Handle: "clash", RootFS: MemoryRootFS, NetIn: []isolation.NetIn{{HostPort: 8000, ContainerPort: 80}}})
	if !isolation.IsInsufficientResources(err) || !strings.Contains(err.Error(), "HostPort 8000") {
		t.Fatalf("Create with a taken host port: %v", err)
	}
	// Two ports wanted, one left: the create fails and gives back the one it took.
	_, err = m.Create(ctx, isolation.ContainerSpec{Handle: "greedy", RootFS: MemoryRootFS, NetIn: []isolation.NetIn{{ContainerPort: 1}, {ContainerPort: 2}}})
	if !isolation.IsInsufficientResources(err) {
		t.Fatalf("Create beyond the port range: %v", err)
	}
	b := mustCreate(t, m, isolation.ContainerSpec{Handle: "b", NetIn: []isolation.NetIn{{ContainerPort: 8080}}})
	if got := ports(b); !slices.Equal(got, []uint32{40002}) {
		t.Fatalf("host ports %v, want [40002]", got)
	}
	if err := m.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "c", NetIn: []isolation.NetIn{{ContainerPort: 1}, {ContainerPort: 2}}})
	if got := ports(c); !slices.Equal(got, []uint32{40000, 40001}) {
		t.Fatalf("host ports after release %v, want [40000 40001]", got)
	}
}

func TestMemoryContainerIP(t *testing.T) {
	m := newTestMemory(t, func(c *MemoryConfig) { c.ContainerSubnet = "127.9.0.0/30" })
	ctx := t.Context()
	prefix := netip.MustParsePrefix("127.9.0.0/30")
	seen := map[string]bool{}
	for _, h := range []string{"a", "b"} {
		info, err := mustCreate(t, m, isolation.ContainerSpec{Handle: h}).Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(info.ContainerIP)
		if err != nil || !prefix.Contains(ip) || seen[info.ContainerIP] || ip == prefix.Addr() {
			t.Fatalf("ContainerIP %q (%v): want a fresh host address of %s", info.ContainerIP, err, prefix)
		}
		seen[info.ContainerIP] = true
		if info.HostIP != "127.0.0.1" {
			t.Fatalf("HostIP %q", info.HostIP)
		}
	}
	if _, err := m.Create(ctx, isolation.ContainerSpec{Handle: "c", RootFS: MemoryRootFS}); !isolation.IsInsufficientResources(err) {
		t.Fatalf("Create with the subnet exhausted: %v", err)
	}
	info, err := mustCreate(t, m, isolation.ContainerSpec{Handle: "none", Network: isolation.NetworkNone}).Info(ctx)
	if err != nil || info.ContainerIP != "" {
		t.Fatalf("a NetworkNone container has address %q (%v), want none", info.ContainerIP, err)
	}
}

func TestMemoryInjectEvent(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := t.Context()
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "oom"})
	var out syncBuffer
	p, err := c.Run(ctx, MemoryProgram(IgnoreTerm()), isolation.ProcessIO{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InjectEvent(ctx, "oom", "something odd"); err != nil {
		t.Fatal(err)
	}
	expectRunning(t, p, "after an event that is not an OOM")
	if err := m.InjectEvent(ctx, "oom", isolation.EventOutOfMemory); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != ExitKilled {
		t.Fatalf("exit %d after OOM, want %d", code, ExitKilled)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Events, []string{"something odd", isolation.EventOutOfMemory}) || info.State != isolation.StateActive {
		t.Fatalf("Info events %q state %q", info.Events, info.State)
	}
	if err := m.InjectEvent(ctx, "nope", isolation.EventOutOfMemory); !isolation.IsNotFound(err) {
		t.Fatalf("InjectEvent into an unknown container: %v", err)
	}
}

func TestMemoryEventsBounded(t *testing.T) {
	m := newTestMemory(t, nil)
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "noisy"})
	for i := range maxEvents + 10 {
		if err := m.InjectEvent(t.Context(), "noisy", fmt.Sprint("e", i)); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := c.Info(t.Context())
	if len(info.Events) != maxEvents || info.Events[0] != "e10" || info.Events[maxEvents-1] != fmt.Sprint("e", maxEvents+9) {
		t.Fatalf("events kept: %d, first %q", len(info.Events), info.Events[0])
	}
}

func TestMemoryProgramsAndUsage(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := t.Context()
	got := make(chan *ProcContext, 1)
	m.RegisterProgram("/bin/hog", func(ctx context.Context, pc *ProcContext) int {
		got <- pc
		pc.AddCPUTime(3 * time.Millisecond)
		pc.SetMemoryUsage(100)
		n, _ := pc.Getenv("HOG_BYTES")
		var bytes uint64
		fmt.Sscan(n, &bytes)
		pc.SetMemoryUsage(bytes)
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(exitTimeout):
			return 1
		}
	})
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "hog", Env: []string{"A=1"}, Limits: isolation.Limits{MemoryBytes: 1000}})
	spec := isolation.ProcessSpec{Path: "/bin/hog", Args: []string{"x"}, Env: []string{"HOG_BYTES=500"}, User: "vcap", Dir: "/home/vcap/app"}
	small, err := c.Run(ctx, spec, isolation.ProcessIO{})
	if err != nil {
		t.Fatal(err)
	}
	pc := <-got
	if pc.Handle != "hog" || pc.ID != small.ID() || !slices.Equal(pc.Args, []string{"x"}) || pc.User != "vcap" ||
		pc.Dir != "/home/vcap/app" || !slices.Equal(pc.Env, []string{"A=1", "HOG_BYTES=500"}) {
		t.Fatalf("ProcContext %+v", pc)
	}
	if names, err := pc.ReadDir("/home/vcap"); err != nil || !slices.Equal(names, []string{"app"}) {
		t.Fatalf("the working directory was not created: %v %v", names, err)
	}
	deadline := time.Now().Add(exitTimeout)
	for {
		met, err := c.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if met.MemoryBytes == 500 {
			if met.Pids != 1 || met.CPUNanos != uint64(3*time.Millisecond) || met.MemoryLimitBytes != 1000 {
				t.Fatalf("Metrics %+v", met)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MemoryBytes %d, want 500", met.MemoryBytes)
		}
		time.Sleep(time.Millisecond)
	}
	// A second process pushes the container past its limit: the OOM killer takes both.
	spec.Env = []string{"HOG_BYTES=600"}
	big, err := c.Run(ctx, spec, isolation.ProcessIO{})
	if err != nil {
		t.Fatal(err)
	}
	<-got
	for _, p := range []isolation.Process{small, big} {
		if code := waitExit(t, p); code != ExitKilled {
			t.Fatalf("exit %d, want %d", code, ExitKilled)
		}
	}
	info, _ := c.Info(ctx)
	if !slices.Contains(info.Events, isolation.EventOutOfMemory) {
		t.Fatalf("events %q, want an OOM", info.Events)
	}
	recorded, err := m.Spec("hog")
	if err != nil || recorded.Limits.MemoryBytes != 1000 || !slices.Equal(recorded.Env, []string{"A=1"}) {
		t.Fatalf("Spec = %+v, %v", recorded, err)
	}
	if _, err := m.Spec("nope"); !isolation.IsNotFound(err) {
		t.Fatalf("Spec of an unknown handle: %v", err)
	}
}

func TestMemoryRunErrors(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := t.Context()
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "c"})
	if _, err := c.Run(ctx, isolation.ProcessSpec{Path: "/no/such/program"}, isolation.ProcessIO{}); !isolation.IsInvalidSpec(err) ||
		!strings.Contains(err.Error(), "Path") {
		t.Fatalf("Run of an unregistered path: %v", err)
	}
	if _, err := c.Attach(ctx, "x", isolation.ProcessIO{Stdin: strings.NewReader("")}); !isolation.IsUnsupported(err) {
		t.Fatalf("Attach with stdin: %v", err)
	}
	p, err := c.Run(ctx, isolation.ProcessSpec{Path: TestProgramPath, Args: []string{"bogus"}}, isolation.ProcessIO{})
	if err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != 2 {
		t.Fatalf("a bad test-program command line exited %d, want 2", code)
	}
	if err := p.Signal(ctx, isolation.Signal(99)); !isolation.IsNotFound(err) {
		t.Fatalf("Signal of an exited process: %v", err)
	}
	if err := m.Destroy(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, MemoryProgram(Exit(0)), isolation.ProcessIO{}); !isolation.IsNotFound(err) {
		t.Fatalf("Run in a destroyed container: %v", err)
	}
	if err := c.SetProperty(ctx, "k", "v"); !isolation.IsNotFound(err) {
		t.Fatalf("SetProperty on a destroyed container: %v", err)
	}
}

func TestMemoryDiskLimit(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := t.Context()
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "small", Limits: isolation.Limits{DiskBytes: 100}})
	stream := func(name string, size int) error {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)})
		tw.Write(bytes.Repeat([]byte("x"), size))
		tw.Close()
		return c.StreamIn(ctx, "/data", &buf)
	}
	if err := stream("a", 60); err != nil {
		t.Fatal(err)
	}
	if err := stream("a", 90); err != nil {
		t.Fatalf("replacing a file frees its old size first: %v", err)
	}
	if err := stream("b", 20); !isolation.IsInsufficientResources(err) {
		t.Fatalf("StreamIn past the disk limit: %v", err)
	}
	met, _ := c.Metrics(ctx)
	info, _ := c.Info(ctx)
	if met.DiskBytes != 90 || met.DiskLimitBytes != 100 || !slices.Equal(info.Events, []string{isolation.EventDiskLimit}) {
		t.Fatalf("metrics %+v events %q", met, info.Events)
	}
	p, _ := c.Run(ctx, MemoryProgram(WriteFile("/data/c", strings.Repeat("y", 20))), isolation.ProcessIO{})
	if code := waitExit(t, p); code != 1 {
		t.Fatalf("a program writing past the disk limit exited %d, want 1", code)
	}
}

func TestMemoryPropertyIndexDoesNotLeak(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := t.Context()
	for i := range 20 {
		c := mustCreate(t, m, isolation.ContainerSpec{Handle: fmt.Sprint("c", i), Properties: isolation.Properties{"cell": "z1", "i": fmt.Sprint(i)}})
		if err := c.SetProperty(ctx, "i", "changed"); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := m.List(ctx, isolation.Properties{"i": "changed", "cell": "z1"}); len(got) != 20 {
		t.Fatalf("List found %d, want 20", len(got))
	}
	if got, _ := m.List(ctx, isolation.Properties{"i": "3"}); len(got) != 0 {
		t.Fatalf("an overwritten property value still matches %d containers", len(got))
	}
	destroyAll(t, m)
	if n := len(m.s.index); n != 0 {
		t.Fatalf("property index holds %d keys after every container was destroyed", n)
	}
	if m.Len() != 0 || m.s.reservedMemory != 0 || len(m.s.ips.used) != 0 {
		t.Fatalf("reservations left after destroying everything")
	}
}

func TestMemoryReopenSharesPrograms(t *testing.T) {
	m := newTestMemory(t, nil)
	m.RegisterProgram("/bin/seven", func(context.Context, *ProcContext) int { return 7 })
	m2 := ReopenMemory(m.State())
	c := mustCreate(t, m2, isolation.ContainerSpec{Handle: "c"})
	p, err := c.Run(t.Context(), isolation.ProcessSpec{Path: "/bin/seven"}, isolation.ProcessIO{})
	if err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != 7 {
		t.Fatalf("exit %d", code)
	}
	if _, err := m.Lookup(t.Context(), "c"); err != nil {
		t.Fatalf("the first backend does not see what the second created: %v", err)
	}
}

func TestMemoryStopContextEnds(t *testing.T) {
	m := newTestMemory(t, nil)
	c := mustCreate(t, m, isolation.ContainerSpec{Handle: "c"})
	var out syncBuffer
	p, err := c.Run(t.Context(), MemoryProgram(IgnoreTerm()), isolation.ProcessIO{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := c.Stop(ctx, time.Hour, false); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Stop with a context ending before the grace: %v", err)
	}
	expectRunning(t, p, "when Stop's context ended before its grace")
}

func TestProgramArgvRoundTrip(t *testing.T) {
	progs := []Program{Exit(3), Echo("o", "e"), Sleep(), IgnoreTerm(), Cat(), PrintEnv("X"), PrintCwd(),
		WriteFile("/p", "c"), ReadFile("/p"), ListDir("/d")}
	if len(progs) != len(Kinds) {
		t.Fatalf("the test covers %d kinds of %d", len(progs), len(Kinds))
	}
	for _, p := range progs {
		got, err := ParseArgv(p.Argv())
		if err != nil || got != p {
			t.Errorf("ParseArgv(%v) = %+v, %v", p.Argv(), got, err)
		}
	}
	for _, bad := range [][]string{nil, {"nope"}, {"exit"}, {"exit", "x"}, {"echo", "1"}} {
		if _, err := ParseArgv(bad); err == nil {
			t.Errorf("ParseArgv(%q) accepted", bad)
		}
	}
}

func TestSubtestNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range SubtestNames() {
		if seen[n] || strings.ContainsAny(n, " \t") {
			t.Errorf("subtest name %q is repeated or has blanks", n)
		}
		seen[n] = true
	}
}

func TestNormField(t *testing.T) {
	for in, want := range map[string]string{
		"Limits.CPUWeight":    "limitscpuweight",
		"limits.cpu_weight":   "limitscpuweight",
		"NetIn[0].HostPort 7": "netin0hostport7",
	} {
		if got := normField(in); got != want {
			t.Errorf("normField(%q) = %q, want %q", in, got, want)
		}
	}
}
