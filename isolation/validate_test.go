package isolation

import (
	"strings"
	"testing"
)

// expectField fails t unless err is ErrInvalidSpec and its message names field, or, for an
// empty field, unless err is nil.
func expectField(t *testing.T, err error, field string) {
	t.Helper()
	switch {
	case field == "" && err != nil:
		t.Fatalf("error %q, want none", err)
	case field == "":
	case err == nil:
		t.Fatalf("no error, want ErrInvalidSpec naming %s", field)
	case !IsInvalidSpec(err):
		t.Fatalf("error %q is not ErrInvalidSpec", err)
	case !strings.Contains(err.Error(), field):
		t.Fatalf("error %q does not name %s", err, field)
	}
}

func TestValidateHandle(t *testing.T) {
	tests := []struct {
		handle string
		valid  bool
	}{
		{"a", true},
		{"app-1_guid.0", true},
		{"...", true},
		{".a", true},
		{strings.Repeat("h", 128), true},
		{"", false},
		{".", false},
		{"..", false},
		{strings.Repeat("h", 129), false},
		{"a/b", false},
		{`a\b`, false},
		{"a b", false},
		{"a:b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.handle, func(t *testing.T) {
			want := "Handle"
			if tt.valid {
				want = ""
			}
			expectField(t, ValidateHandle(tt.handle), want)
		})
	}
}

func TestValidateContainerSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*ContainerSpec)
		field  string // "" for a valid spec
	}{
		{"minimal", func(*ContainerSpec) {}, ""},
		{"full", func(s *ContainerSpec) {
			s.Env = []string{"A=1", "B=", "C==x"}
			s.BindMounts = []BindMount{
				{SrcPath: "/data", DstPath: "/mnt/data/"},
				{SrcPath: `C:\data`, DstPath: "/c"},
				{SrcPath: "d:/data", DstPath: "/d"},
				{SrcPath: `\\server\share`, DstPath: "/unc"},
			}
			s.Limits = Limits{MemoryBytes: 1 << 30, CPUWeight: 100, Pids: 10, DiskBytes: 1 << 30}
			s.NetIn = []NetIn{{ContainerPort: 8080}, {ContainerPort: 8081}, {HostPort: 61000, ContainerPort: 22}, {HostPort: 65535, ContainerPort: 65535}}
			s.Properties = Properties{"k": ""}
		}, ""},
		{"unknown rootfs scheme is not this package's concern", func(s *ContainerSpec) { s.RootFS = "bogus:///x" }, ""},
		{"network none", func(s *ContainerSpec) { s.Network = NetworkNone }, ""},

		{"empty handle", func(s *ContainerSpec) { s.Handle = "" }, "Handle"},
		{"dotdot handle", func(s *ContainerSpec) { s.Handle = ".." }, "Handle"},
		{"slash handle", func(s *ContainerSpec) { s.Handle = "a/b" }, "Handle"},
		{"empty rootfs", func(s *ContainerSpec) { s.RootFS = "" }, "RootFS"},
		{"rootfs without scheme", func(s *ContainerSpec) { s.RootFS = "busybox" }, "RootFS"},
		{"rootfs with empty scheme", func(s *ContainerSpec) { s.RootFS = ":busybox" }, "RootFS"},
		{"env without equals", func(s *ContainerSpec) { s.Env = []string{"A=1", "NOEQUALS"} }, "Env[1]"},
		{"env with empty key", func(s *ContainerSpec) { s.Env = []string{"=x"} }, "Env[0]"},
		{"env with NUL", func(s *ContainerSpec) { s.Env = []string{"A=x\x00y"} }, "Env[0]"},
		{"relative bind src", func(s *ContainerSpec) {
			s.BindMounts = []BindMount{{SrcPath: "data", DstPath: "/data"}}
		}, "BindMounts[0].SrcPath"},
		{"drive-relative bind src", func(s *ContainerSpec) {
			s.BindMounts = []BindMount{{SrcPath: "C:data", DstPath: "/data"}}
		}, "BindMounts[0].SrcPath"},
		{"rooted windows bind src", func(s *ContainerSpec) {
			s.BindMounts = []BindMount{{SrcPath: `\data`, DstPath: "/data"}}
		}, "BindMounts[0].SrcPath"},
		{"relative bind dst", func(s *ContainerSpec) {
			s.BindMounts = []BindMount{{SrcPath: "/a", DstPath: "/a"}, {SrcPath: "/b", DstPath: "relative/dst"}}
		}, "BindMounts[1].DstPath"},
		{"bind dst on the root", func(s *ContainerSpec) {
			s.BindMounts = []BindMount{{SrcPath: "/a", DstPath: "/x/.."}}
		}, "BindMounts[0].DstPath"},
		{"cpu weight over 100", func(s *ContainerSpec) { s.Limits.CPUWeight = 101 }, "Limits.CPUWeight"},
		{"unknown network", func(s *ContainerSpec) { s.Network = "host" }, "Network"},
		{"netin without the bridge", func(s *ContainerSpec) {
			s.Network = NetworkNone
			s.NetIn = []NetIn{{ContainerPort: 80}}
		}, "NetIn[0]"},
		{"container port zero", func(s *ContainerSpec) { s.NetIn = []NetIn{{ContainerPort: 0}} }, "NetIn[0].ContainerPort"},
		{"container port too big", func(s *ContainerSpec) { s.NetIn = []NetIn{{ContainerPort: 65536}} }, "NetIn[0].ContainerPort"},
		{"host port too big", func(s *ContainerSpec) {
			s.NetIn = []NetIn{{HostPort: 70000, ContainerPort: 8080}}
		}, "NetIn[0].HostPort"},
		{"host port twice", func(s *ContainerSpec) {
			s.NetIn = []NetIn{{HostPort: 61000, ContainerPort: 80}, {HostPort: 61000, ContainerPort: 81}}
		}, "NetIn[1].HostPort"},
		{"empty property key", func(s *ContainerSpec) { s.Properties = Properties{"": "v"} }, "Properties"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ContainerSpec{Handle: "h-1", RootFS: "preloaded:busybox"}
			tt.mutate(&s)
			expectField(t, ValidateContainerSpec(s), tt.field)
		})
	}
}

func TestValidateProcessSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*ProcessSpec)
		field  string // "" for a valid spec
	}{
		{"minimal", func(*ProcessSpec) {}, ""},
		{"full", func(p *ProcessSpec) {
			p.ID = "web.1"
			p.Args = []string{"-c", "true"}
			p.Env = []string{"A=1", "B="}
			p.Dir = "/home/vcap"
			p.User = "anyone: not this package's concern"
			n := uint64(0)
			p.Rlimits = Rlimits{Nofile: &n}
		}, ""},
		{"bad id", func(p *ProcessSpec) { p.ID = "bad id/with slash" }, "ID"},
		{"dot id", func(p *ProcessSpec) { p.ID = "." }, "ID"},
		{"long id", func(p *ProcessSpec) { p.ID = strings.Repeat("p", 129) }, "ID"},
		{"empty path", func(p *ProcessSpec) { p.Path = "" }, "Path"},
		{"relative dir", func(p *ProcessSpec) { p.Dir = "relative/dir" }, "Dir"},
		{"env without equals", func(p *ProcessSpec) { p.Env = []string{"NOEQUALS"} }, "Env[0]"},
		{"env with NUL", func(p *ProcessSpec) { p.Env = []string{"A=1", "B\x00=2"} }, "Env[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ProcessSpec{Path: "/bin/true"}
			tt.mutate(&p)
			expectField(t, ValidateProcessSpec(p), tt.field)
		})
	}
}
