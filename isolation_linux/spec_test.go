package isolationlinux

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/trellis-run/trellis/isolation"
)

func TestValidateContainerSpec(t *testing.T) {
	ok := isolation.ContainerSpec{Handle: "a-1", RootFS: "preloaded:busybox"}
	tests := []struct {
		name   string
		mutate func(*isolation.ContainerSpec)
		check  func(error) bool
	}{
		{"valid", func(*isolation.ContainerSpec) {}, func(err error) bool { return err == nil }},
		{"dotdot handle", func(s *isolation.ContainerSpec) { s.Handle = ".." }, isolation.IsInvalidSpec},
		{"slash handle", func(s *isolation.ContainerSpec) { s.Handle = "a/b" }, isolation.IsInvalidSpec},
		{"docker rootfs", func(s *isolation.ContainerSpec) { s.RootFS = "docker:///ubuntu" }, func(err error) bool { return err == nil }},
		{"oci rootfs with credentials", func(s *isolation.ContainerSpec) {
			s.RootFS, s.ImageAuth = "oci://registry.example.com/app:1", isolation.ImageAuth{Username: "u", Password: "p"}
		}, func(err error) bool { return err == nil }},
		{"docker rootfs without an image", func(s *isolation.ContainerSpec) { s.RootFS = "docker:///" }, isolation.IsInvalidSpec},
		{"credentials on a stack", func(s *isolation.ContainerSpec) { s.ImageAuth = isolation.ImageAuth{Username: "u", Password: "p"} }, isolation.IsInvalidSpec},
		{"unknown rootfs scheme", func(s *isolation.ContainerSpec) { s.RootFS = "bogus:///x" }, isolation.IsUnsupported},
		{"not a uri", func(s *isolation.ContainerSpec) { s.RootFS = "busybox" }, isolation.IsInvalidSpec},
		{"bind into /proc", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: "/tmp", DstPath: "/proc/x"}}
		}, isolation.IsInvalidSpec},
		{"netin without network", func(s *isolation.ContainerSpec) {
			s.Network = isolation.NetworkNone
			s.NetIn = []isolation.NetIn{{ContainerPort: 80}}
		}, isolation.IsInvalidSpec},
		{"cpu weight", func(s *isolation.ContainerSpec) { s.Limits.CPUWeight = 101 }, isolation.IsInvalidSpec},
		{"empty stack", func(s *isolation.ContainerSpec) { s.RootFS = "preloaded:" }, isolation.IsInvalidSpec},
		{"stack with a slash", func(s *isolation.ContainerSpec) { s.RootFS = "preloaded:../x" }, isolation.IsInvalidSpec},
		{"drive path bind source", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: `C:\data`, DstPath: "/data"}}
		}, isolation.IsInvalidSpec},
		{"bind onto /dev", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: "/tmp", DstPath: "/dev/"}}
		}, isolation.IsInvalidSpec},
		{"bind beside /dev", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: "/tmp", DstPath: "/devices"}}
		}, func(err error) bool { return err == nil }},
		{"invalid before unsupported", func(s *isolation.ContainerSpec) {
			s.RootFS = "docker:///ubuntu"
			s.Env = []string{"NOEQUALS"}
		}, isolation.IsInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mutate(&s)
			if err := ValidateContainerSpec(s); !tt.check(err) {
				t.Fatalf("ValidateContainerSpec: %v", err)
			}
		})
	}
}

func TestBuildSpec(t *testing.T) {
	opts := SpecOptions{RootfsPath: "/s/h/rootfs", LowerDir: "/l", UpperDir: "/u", WorkDir: "/w", UIDMapStart: 100000, UIDMapSize: 65536, CgroupsPath: "trellis/h"}
	cs := isolation.ContainerSpec{
		Handle: "h", RootFS: "preloaded:busybox", Env: []string{"PATH=/x", "A=1"},
		BindMounts: []isolation.BindMount{{SrcPath: "/data", DstPath: "/mnt/data/", ReadOnly: true}},
		Limits:     isolation.Limits{MemoryBytes: 64 << 20, CPUWeight: 50, Pids: 100},
	}
	s, err := BuildSpec(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "h" || s.Root.Path != opts.RootfsPath || s.Linux.CgroupsPath != "trellis/h" {
		t.Fatalf("hostname %q root %q cgroup %q", s.Hostname, s.Root.Path, s.Linux.CgroupsPath)
	}
	if got := strings.Join(s.Process.Env, " "); got != "PATH=/x A=1" {
		t.Fatalf("env %q: the container's PATH must replace the default", got)
	}
	if !hasNamespace(s, specs.UserNamespace) || len(s.Linux.UIDMappings) != 1 || s.Linux.UIDMappings[0].HostID != 100000 {
		t.Fatalf("user namespace %v mappings %+v", hasNamespace(s, specs.UserNamespace), s.Linux.UIDMappings)
	}
	last := s.Mounts[len(s.Mounts)-1]
	if last.Destination != "/mnt/data" || last.Source != "/data" || !contains(last.Options, "ro") {
		t.Fatalf("bind mount %+v", last)
	}
	if *s.Linux.Resources.Memory.Limit != 64<<20 || *s.Linux.Resources.Memory.Swap != 64<<20 || *s.Linux.Resources.Pids.Limit != 100 || *s.Linux.Resources.CPU.Shares != 512 {
		t.Fatalf("resources %+v", s.Linux.Resources)
	}
	if s.Annotations[annotationOverlay] != "lowerdir=/l,upperdir=/u,workdir=/w,volatile" {
		t.Fatalf("overlay %q", s.Annotations[annotationOverlay])
	}
	if !s.Process.NoNewPrivileges || len(s.Process.Capabilities.Bounding) != len(DefaultCapabilities) || contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Fatalf("process hardening %+v", s.Process)
	}
	if s.Process.Rlimits[0].Type != "RLIMIT_NOFILE" || s.Process.Rlimits[0].Soft != 1024 {
		t.Fatalf("rlimits %+v", s.Process.Rlimits)
	}
	cs.Privileged = true
	if s, err = BuildSpec(cs, opts); err != nil || hasNamespace(s, specs.UserNamespace) || s.Linux.UIDMappings != nil {
		t.Fatalf("privileged spec has a user namespace: %v", err)
	}
	if _, err := BuildSpec(cs, SpecOptions{RootfsPath: "/r", LowerDir: "/a,b", UpperDir: "/u", WorkDir: "/w"}); !isolation.IsInvalidSpec(err) {
		t.Fatalf("overlay path with a comma: %v", err)
	}
}

// TestBuildSpecImageLayers: an image's layers stack as several lower directories, and an
// unprivileged container on them mounts with userxattr.
func TestBuildSpecImageLayers(t *testing.T) {
	cs := isolation.ContainerSpec{Handle: "h", RootFS: "docker:///app:1"}
	opts := SpecOptions{RootfsPath: "/r", LowerDir: "/layers/top:/layers/base", UpperDir: "/u", WorkDir: "/w", UIDMapStart: 100000, UIDMapSize: 65536, UserXattr: true}
	s, err := BuildSpec(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Annotations[annotationOverlay]; got != "lowerdir=/layers/top:/layers/base,upperdir=/u,workdir=/w,volatile,userxattr" {
		t.Fatalf("overlay %q", got)
	}
	for _, lower := range []string{"/a::/b", ":/a", "/a:/b,c"} {
		opts.LowerDir = lower
		if _, err := BuildSpec(cs, opts); !isolation.IsInvalidSpec(err) {
			t.Fatalf("lowerdir %q: %v", lower, err)
		}
	}
}

func hasNamespace(s *specs.Spec, ns specs.LinuxNamespaceType) bool {
	for _, n := range s.Linux.Namespaces {
		if n.Type == ns {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
