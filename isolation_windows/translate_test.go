package isolationwindows

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/trellis-run/trellis/isolation"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares v's indented JSON with testdata/name (rewritten with -update).
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run go test -update after checking):\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestGoldenHCSDocuments(t *testing.T) {
	spec := isolation.ContainerSpec{
		Handle: "web_0.guid-1",
		RootFS: "preloaded:windows2019",
		Limits: isolation.Limits{MemoryBytes: 512<<20 + 1, CPUWeight: 25, DiskBytes: 10 << 30},
		BindMounts: []isolation.BindMount{
			{SrcPath: `C:\ProgramData\trellis\cache\droplet`, DstPath: "/app", ReadOnly: true},
			{SrcPath: `D:\logs\web`, DstPath: "/var/log"},
		},
	}
	layers := []hcsLayer{
		{ID: "11111111-2222-3333-4444-555555555555", Path: `C:\ProgramData\trellis\layers\app`},
		{ID: "66666666-7777-8888-9999-000000000000", Path: `C:\ProgramData\trellis\layers\servercore`},
	}
	golden(t, "hcs-container.json", buildContainerDoc("trellis-0123456789ab-web_0.guid-1", spec, layers,
		`\\?\Volume{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}\`, `C:\ProgramData\trellis\scratch\trellis-0123456789ab-web_0.guid-1`, "ep-1"))
	noLimits := spec
	noLimits.Limits, noLimits.BindMounts = isolation.Limits{}, nil
	golden(t, "hcs-container-nolimits.json", buildContainerDoc("c", noLimits, layers[1:], `\\?\Volume{x}\`, `C:\s\c`, ""))

	ep, err := buildEndpointDoc("trellis-0123456789ab-web_0.guid-1", "", []isolation.PortMapping{
		{HostPort: 61002, ContainerPort: 9090}, {HostPort: 61001, ContainerPort: 8080},
	})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "hns-endpoint.json", ep)

	rec := &containerRecord{Handle: "h", Mode: ModeContainer, Ports: []isolation.PortMapping{{HostPort: 61001, ContainerPort: 8080}},
		Spec: isolation.ContainerSpec{Env: []string{"A=container", "PORT=1"}}}
	root := fsRoot{dir: t.TempDir()}
	os.MkdirAll(filepath.Join(root.dir, "app"), 0o755)
	l, err := buildLaunch(rec, root, DefaultConfig(), isolation.ProcessSpec{Path: "/app/web.exe", Args: []string{"--listen", "a b", `q"uote`}, Dir: "/app", Env: []string{"B=process"}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "hcs-process.json", buildProcessDoc(l))
}

func TestCPURateAndJobLimits(t *testing.T) {
	for _, tc := range []struct{ weight, want uint32 }{{0, 0}, {1, 100}, {25, 2500}, {99, 9900}, {100, 0}} {
		if got := cpuRateFor(tc.weight); got != tc.want {
			t.Errorf("cpuRateFor(%d) = %d, want %d", tc.weight, got, tc.want)
		}
	}
	j := jobLimitsFor(isolation.Limits{MemoryBytes: 64 << 20, Pids: 1 << 40, CPUWeight: 50})
	want := jobLimits{LimitFlags: jobLimitKillOnJobClose | jobLimitDieOnUnhandledException | jobLimitJobMemory | jobLimitActiveProcess,
		JobMemoryLimit: 64 << 20, ActiveProcessLimit: 1<<32 - 1, CPURate: 5000}
	if j != want {
		t.Errorf("jobLimitsFor = %+v, want %+v", j, want)
	}
	if j := jobLimitsFor(isolation.Limits{}); j.LimitFlags != jobLimitKillOnJobClose|jobLimitDieOnUnhandledException || j.CPURate != 0 {
		t.Errorf("jobLimitsFor(no limits) = %+v, want only kill-on-close and die-on-unhandled-exception", j)
	}
}

// The structures x/sys/windows lacks must have the sizes Windows documents.
func TestJobStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"JOBOBJECT_CPU_RATE_CONTROL_INFORMATION", unsafe.Sizeof(jobCPURateControlInformation{}), 8},
		{"JOBOBJECT_BASIC_ACCOUNTING_INFORMATION", unsafe.Sizeof(jobBasicAccountingInformation{}), 48},
		{"JOBOBJECT_BASIC_AND_IO_ACCOUNTING_INFORMATION", unsafe.Sizeof(jobBasicAndIOAccountingInformation{}), 96},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: size %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	m := jobMetrics(jobBasicAndIOAccountingInformation{BasicInfo: jobBasicAccountingInformation{TotalUserTime: 30, TotalKernelTime: 12, ActiveProcesses: 3}}, 1<<20)
	if m.CPUNanos != 4200 || m.Pids != 3 || m.MemoryBytes != 1<<20 {
		t.Errorf("jobMetrics = %+v", m)
	}
}

func TestCommandLineRoundTrip(t *testing.T) {
	for _, args := range [][]string{
		{`C:\app\web.exe`},
		{"a b", `c"d`, `e\`, `f\\"g`, "", `\\server\share\x y\`},
	} {
		cl := composeCommandLine(args)
		if got := splitCommandLine(cl); !slices.Equal(got, args) {
			t.Errorf("split(compose(%q)) = %q via %s", args, got, cl)
		}
	}
}

func TestModeSupport(t *testing.T) {
	cases := []struct {
		name  string
		mode  Mode
		spec  isolation.ContainerSpec
		unsup bool
	}{
		{"process plain", ModeProcess, isolation.ContainerSpec{}, false},
		{"process privileged", ModeProcess, isolation.ContainerSpec{Privileged: true}, true},
		{"process disk limit (the disk watchdog enforces it)", ModeProcess, isolation.ContainerSpec{Limits: isolation.Limits{DiskBytes: 1}}, false},
		{"process network none", ModeProcess, isolation.ContainerSpec{Network: isolation.NetworkNone}, true},
		{"process read-only bind", ModeProcess, isolation.ContainerSpec{BindMounts: []isolation.BindMount{{SrcPath: `C:\x`, DstPath: "/x", ReadOnly: true}}}, true},
		{"process rw bind", ModeProcess, isolation.ContainerSpec{BindMounts: []isolation.BindMount{{SrcPath: `C:\x`, DstPath: "/x"}}}, false},
		{"container disk limit and ro bind", ModeContainer, isolation.ContainerSpec{Limits: isolation.Limits{DiskBytes: 1}, BindMounts: []isolation.BindMount{{SrcPath: `C:\x`, DstPath: "/x", ReadOnly: true}}}, false},
		{"container privileged", ModeContainer, isolation.ContainerSpec{Privileged: true}, true},
		{"container pids limit", ModeContainer, isolation.ContainerSpec{Limits: isolation.Limits{Pids: 64}}, true},
		{"process pids limit", ModeProcess, isolation.ContainerSpec{Limits: isolation.Limits{Pids: 64}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkModeSupport(tc.mode, tc.spec)
			if got := isolation.IsUnsupported(err); got != tc.unsup {
				t.Fatalf("checkModeSupport = %v, want unsupported %v", err, tc.unsup)
			}
		})
	}
	stacks := map[string]StackConfig{"s": {Mode: ModeProcess}}
	for _, rootfs := range []string{"preloaded:other", "docker:///x"} {
		if _, _, err := resolveStack(stacks, rootfs); !isolation.IsUnsupported(err) {
			t.Errorf("resolveStack(%q) = %v, want ErrUnsupported", rootfs, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.StateDir = "/var/lib/x"
	ok.Stacks = map[string]StackConfig{"p": {Mode: ModeProcess}, "c": {Mode: ModeContainer, Layers: []string{`C:\layers\base`}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"relative state dir":    func(c *Config) { c.StateDir = "rel" },
		"unknown mode":          func(c *Config) { c.Stacks["x"] = StackConfig{Mode: "vm"} },
		"container no layers":   func(c *Config) { c.Stacks["x"] = StackConfig{Mode: ModeContainer} },
		"process with layers":   func(c *Config) { c.Stacks["x"] = StackConfig{Mode: ModeProcess, Layers: []string{`C:\l`}} },
		"bad host ip":           func(c *Config) { c.HostIP = "nope" },
		"inverted port range":   func(c *Config) { c.PortRangeLo, c.PortRangeHi = 10, 5 },
		"zero max containers":   func(c *Config) { c.MaxContainers = 0 },
		"zero stop timeout":     func(c *Config) { c.StopTimeout = 0 },
		"relative scratch dir":  func(c *Config) { c.ScratchDir = "s" },
		"stack name with slash": func(c *Config) { c.Stacks["a/b"] = StackConfig{Mode: ModeProcess} },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			c.Stacks = map[string]StackConfig{}
			for k, v := range ok.Stacks {
				c.Stacks[k] = v
			}
			mutate(&c)
			if err := c.Validate(); !isolation.IsInvalidSpec(err) {
				t.Fatalf("Validate = %v, want ErrInvalidSpec", err)
			}
		})
	}
}

// TestUnpackTarEscapes: names and links never write outside the root, and bind mounts are
// followed to their host directory.
func TestUnpackTarEscapes(t *testing.T) {
	base := t.TempDir()
	rootDir := filepath.Join(base, "root")
	mountSrc := filepath.Join(base, "mounted")
	for _, d := range []string{filepath.Join(rootDir, "dst"), mountSrc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := fsRoot{dir: rootDir, mounts: []mountPoint{{Dst: "/mnt", Src: mountSrc}}}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, typ byte, link, body string) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Linkname: link, Size: int64(len(body)), Mode: 0o644})
		tw.Write([]byte(body))
	}
	add("../up", tar.TypeReg, "", "1")
	add("a/../../../mid", tar.TypeReg, "", "2")
	add("l", tar.TypeSymlink, "../../../../..", "")
	add("l/through-link", tar.TypeReg, "", "3")
	add("abs", tar.TypeSymlink, `C:\mnt`, "")
	add("abs/in-mount", tar.TypeReg, "", "4")
	tw.Close()
	if err := unpackTar(context.Background(), root, "/dst", &buf); err != nil {
		t.Fatalf("unpackTar: %v", err)
	}
	for path, want := range map[string]string{
		filepath.Join(rootDir, "dst", "up"):    "1",
		filepath.Join(rootDir, "dst", "mid"):   "2",
		filepath.Join(rootDir, "through-link"): "3",
		filepath.Join(mountSrc, "in-mount"):    "4",
	} {
		if got, err := os.ReadFile(path); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	for _, p := range []string{filepath.Join(base, "up"), filepath.Join(base, "mid"), filepath.Join(base, "through-link")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists: an archive escaped the root", p)
		}
	}
	if _, err := packTar(root, "/nope"); !isolation.IsNotFound(err) {
		t.Errorf("packTar of a missing path = %v, want ErrNotFound", err)
	}
}

// FuzzUnpackTar: no archive writes outside the root or panics.
func FuzzUnpackTar(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/../.."})
	tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		rootDir := filepath.Join(base, "root")
		os.MkdirAll(rootDir, 0o755)
		unpackTar(context.Background(), fsRoot{dir: rootDir}, "/", bytes.NewReader(data))
		entries, _ := os.ReadDir(base)
		if len(entries) != 1 {
			t.Fatalf("the archive wrote next to the root: %v", entries)
		}
	})
}
