package isolationwindows

import (
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

// TestValidateSpecs covers what the Windows backend checks beyond isolation's platform-neutral
// rules (tested in package isolation), and that those rules still apply.
func TestValidateSpecs(t *testing.T) {
	valid := func(err error) bool { return err == nil }
	containers := []struct {
		name   string
		mutate func(*isolation.ContainerSpec)
		check  func(error) bool
	}{
		{"valid", func(*isolation.ContainerSpec) {}, valid},
		{"drive path bind source", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: `C:\data`, DstPath: "/data"}}
		}, valid},
		{"relative bind source", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: `data`, DstPath: "/data"}}
		}, isolation.IsInvalidSpec},
		{"bind onto the root", func(s *isolation.ContainerSpec) {
			s.BindMounts = []isolation.BindMount{{SrcPath: `C:\data`, DstPath: "/"}}
		}, isolation.IsInvalidSpec},
		{"dotdot handle", func(s *isolation.ContainerSpec) { s.Handle = ".." }, isolation.IsInvalidSpec},
	}
	for _, tt := range containers {
		t.Run("container/"+tt.name, func(t *testing.T) {
			s := isolation.ContainerSpec{Handle: "h", RootFS: "preloaded:windows2016"}
			tt.mutate(&s)
			if err := validateContainerSpec(s); !tt.check(err) {
				t.Fatalf("validateContainerSpec: %v", err)
			}
		})
	}

	n := uint64(1024)
	processes := []struct {
		name   string
		mutate func(*isolation.ProcessSpec)
		check  func(error) bool
	}{
		{"valid", func(*isolation.ProcessSpec) {}, valid},
		{"vcap", func(p *isolation.ProcessSpec) { p.User = "vcap" }, valid},
		{"another user", func(p *isolation.ProcessSpec) { p.User = "1000:1000" }, isolation.IsUnsupported},
		{"rlimits", func(p *isolation.ProcessSpec) { p.Rlimits.Nofile = &n }, isolation.IsUnsupported},
		{"relative dir", func(p *isolation.ProcessSpec) { p.Dir = "rel" }, isolation.IsInvalidSpec},
		{"invalid before unsupported", func(p *isolation.ProcessSpec) {
			p.Rlimits.Nofile = &n
			p.ID = "."
		}, isolation.IsInvalidSpec},
	}
	for _, tt := range processes {
		t.Run("process/"+tt.name, func(t *testing.T) {
			p := isolation.ProcessSpec{Path: `C:\app\web.exe`}
			tt.mutate(&p)
			if err := validateProcessSpec(p); !tt.check(err) {
				t.Fatalf("validateProcessSpec: %v", err)
			}
		})
	}
}
