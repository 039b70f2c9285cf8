package isolationlinux

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-run/trellis/isolation"
)

func TestHardening(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	roDir := filepath.Join(testBase, fmt.Sprintf("ro-%d", testSeq.Add(1)))
	if err := os.Mkdir(roDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(roDir) })
	if err := os.WriteFile(filepath.Join(roDir, "f"), []byte("host"), 0o666); err != nil {
		t.Fatal(err)
	}
	for _, privileged := range []bool{false, true} {
		t.Run(fmt.Sprintf("privileged=%v", privileged), func(t *testing.T) {
			c := createContainer(t, b, func(s *isolation.ContainerSpec) {
				s.Privileged = privileged
				s.BindMounts = []isolation.BindMount{{SrcPath: roDir, DstPath: "/ro", ReadOnly: true}}
			})
			tests := []struct {
				name, user, script, want string
			}{
				{"read-only bind mount", "", `echo x > /ro/f 2>/dev/null && echo wrote || echo refused; cat /ro/f`, "refused\nhost"},
				{"cannot mount", "", `mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo refused`, "refused\n"},
				{"cannot unshare", "", `unshare -m true 2>/dev/null && echo ran || echo refused`, "refused\n"},
				// Only the seccomp filter stops this one (a user namespace needs no capability):
				// it proves the program the init loaded is the profile's.
				{"cannot make a user namespace", "", `unshare -U true 2>/dev/null && echo ran || echo refused`, "refused\n"},
				{"masked files read empty", "", `for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do [ ! -e $f ] || [ "$(wc -c <$f)" = 0 ] || echo "$f readable"; done; echo checked`, "checked\n"},
				{"firmware masked", "", `ls /sys/firmware | wc -l`, "0\n"},
				{"proc/sys read-only", "", `echo 1 >/proc/sys/kernel/ctrl-alt-del 2>/dev/null && echo wrote || echo refused`, "refused\n"},
				{"sys read-only", "", `touch /sys/x 2>/dev/null && echo wrote || echo refused`, "refused\n"},
				{"capabilities", "", `grep CapBnd /proc/self/status`, "CapBnd:\t00000000a80425fb\n"},
				{"no_new_privs", "", `grep NoNewPrivs /proc/self/status`, "NoNewPrivs:\t1\n"},
				{"seccomp", "", `grep '^Seccomp:' /proc/self/status`, "Seccomp:\t2\n"},
				// Once the child runs sleep: before its exec, the shell may be redirecting its stdin.
				{"only stdio inherited", "", `sleep 10 & p=$!; until [ "$(cat /proc/$p/comm)" = sleep ]; do :; done; ls /proc/$p/fd; kill $p`, "0\n1\n2\n"},
				{"nofile default", "", `ulimit -n`, "1024\n"},
				{"devices", "", `head -c 4 /dev/zero | wc -c; echo x >/dev/null && echo null; ls /dev/pts/ptmx >/dev/null && echo pts`, "4\nnull\npts\n"},
				{"vcap is unprivileged", "vcap", `id -u; cat /proc/self/status | grep CapEff`, "2000\nCapEff:\t0000000000000000\n"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r := sh(t, c, tt.user, tt.script)
					if r.stdout != tt.want {
						t.Fatalf("%s: exit %d, stdout %q, want %q; stderr %q", tt.script, r.code, r.stdout, tt.want, r.stderr)
					}
				})
			}
			// Container root on the host: the owner of a file it creates, seen in the overlay's
			// upper directory, and the uid of its init.
			if r := sh(t, c, "", `echo hi > /owned`); r.code != 0 {
				t.Fatalf("writing /owned: %+v", r)
			}
			want := 0
			if !privileged {
				want = int(cfg.UIDMapStart)
			}
			upper, err := filepath.Glob(filepath.Join(cfg.DiskDir, "volumes", c.Handle(), "*", "upper", "owned"))
			if err != nil || len(upper) != 1 {
				t.Fatalf("finding /owned in the upper dir: %v %v", upper, err)
			}
			st, err := os.Stat(upper[0])
			if err != nil {
				t.Fatal(err)
			}
			if uid := int(st.Sys().(*syscall.Stat_t).Uid); uid != want {
				t.Fatalf("file made by container root is owned by host uid %d, want %d", uid, want)
			}
			rec, err := readRecord(b.dir(c.Handle()))
			if err != nil {
				t.Fatal(err)
			}
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rec.InitPid))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t", want)) {
				t.Fatalf("init runs as\n%s\nwant host uid %d", status, want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	t.Run("memory", func(t *testing.T) {
		c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Limits.MemoryBytes = 64 << 20 })
		r := sh(t, c, "", `dd if=/dev/zero of=/dev/null bs=200M count=1`)
		if r.code != 137 {
			t.Fatalf("allocating 200 MiB in 64 MiB: exit %d (want 137), stderr %q", r.code, r.stderr)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !contains(info.Events, isolation.EventOutOfMemory) {
			t.Fatalf("Info.Events = %q, want %q", info.Events, isolation.EventOutOfMemory)
		}
		m, err := c.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if m.MemoryLimitBytes != 64<<20 {
			t.Fatalf("Metrics.MemoryLimitBytes = %d, want %d", m.MemoryLimitBytes, 64<<20)
		}
	})
	t.Run("pids", func(t *testing.T) {
		c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Limits.Pids = 20 })
		// A fork bomb: it ends when forks fail, and at no time holds more than the limit.
		// The shell itself gives up when fork fails; the sleeps it started stay.
		sh(t, c, "", `i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done`)
		m, err := c.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if m.Pids < 10 || m.Pids > 20 {
			t.Fatalf("Metrics.Pids = %d after the bomb, want it stopped at the limit of 20", m.Pids)
		}
		if out, err := exec.Command("true").CombinedOutput(); err != nil {
			t.Fatalf("the host cannot fork after the bomb: %v %s", err, out)
		}
	})
	t.Run("disk", func(t *testing.T) {
		c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Limits.DiskBytes = 16 << 20 })
		r := sh(t, c, "", `dd if=/dev/zero of=/big bs=1M count=32 2>/dev/null; echo $?; ls -l /big | awk '{print $5}'`)
		lines := strings.Fields(r.stdout)
		if len(lines) != 2 || lines[0] == "0" {
			t.Fatalf("writing 32 MiB with a 16 MiB disk limit: %q %q", r.stdout, r.stderr)
		}
		if size, _ := strconv.Atoi(lines[1]); size > 16<<20 {
			t.Fatalf("wrote %d bytes past a 16 MiB limit", size)
		}
		m, err := c.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if m.DiskBytes < 8<<20 || m.DiskLimitBytes != 16<<20 {
			t.Fatalf("Metrics disk %d of %d", m.DiskBytes, m.DiskLimitBytes)
		}
	})
}

func TestStreamInStaysInside(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, testConfig(t))
	c := createContainer(t, b, nil)
	marker := fmt.Sprintf("trellis-escape-%d-%d", os.Getpid(), testSeq.Add(1))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "../../../../../tmp/" + marker, Typeflag: tar.TypeReg}, "dotdot")
	add(&tar.Header{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, "")
	add(&tar.Header{Name: "etc/" + marker, Typeflag: tar.TypeReg}, "through symlink")
	add(&tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../etc"}, "")
	add(&tar.Header{Name: "up/" + marker + "-rel", Typeflag: tar.TypeReg}, "through relative symlink")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	// A reader is copied to the init through a pipe; a regular file is handed to the init,
	// which reads it itself. Neither may let the archive out of the container.
	file := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		stream func(t *testing.T) io.Reader
	}{
		{"pipe", func(*testing.T) io.Reader { return bytes.NewReader(buf.Bytes()) }},
		{"file", func(t *testing.T) io.Reader {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := "/app-" + tc.name
			if err := c.StreamIn(context.Background(), dst, tc.stream(t)); err != nil {
				t.Fatalf("StreamIn: %v", err)
			}
			for _, p := range []string{"/tmp/" + marker, "/etc/" + marker, "/etc/" + marker + "-rel"} {
				if _, err := os.Lstat(p); err == nil {
					os.Remove(p)
					t.Errorf("the archive wrote %s on the host", p)
				}
			}
			r := sh(t, c, "", fmt.Sprintf(`cat %[2]s/tmp/%[1]s; echo; cat /etc/%[1]s; echo; cat /etc/%[1]s-rel`, marker, dst))
			if want := "dotdot\nthrough symlink\nthrough relative symlink"; r.stdout != want {
				t.Fatalf("inside the container: %q, want %q (stderr %q)", r.stdout, want, r.stderr)
			}
		})
	}
}

func TestNetworkAndDestroyLeavesNothing(t *testing.T) {
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	if b.net == nil {
		t.Skipf("bridge networking unavailable: %v", b.netErr)
	}
	c := createContainer(t, b, func(s *isolation.ContainerSpec) {
		s.Network = isolation.NetworkBridge
		s.NetIn = []isolation.NetIn{{ContainerPort: 8080}}
		s.Limits.DiskBytes = 8 << 20
	})
	if err := c.StreamIn(context.Background(), "/www", tarOf(t, "index.html", "hello from the container\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.Run(ctx, isolation.ProcessSpec{Path: "httpd", Args: []string{"-f", "-p", "8080", "-h", "/www"}}, isolation.ProcessIO{}); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.MappedPorts) != 1 || info.ContainerIP == "" {
		t.Fatalf("Info: ports %v, container ip %q", info.MappedPorts, info.ContainerIP)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", info.MappedPorts[0].HostPort)
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	if string(body) != "hello from the container\n" {
		t.Fatalf("GET %s = %q", url, body)
	}

	rec, err := readRecord(b.dir(c.Handle()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Destroy(ctx, c.Handle()); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := b.Destroy(ctx, c.Handle()); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", rec.InitPid)); err == nil {
		if st, _ := processStartTime(rec.InitPid); st == rec.InitStart {
			t.Errorf("init %d still runs", rec.InitPid)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, needle := range []string{b.dir(c.Handle()), filepath.Join(cfg.DiskDir, "volumes", c.Handle())} {
		if bytes.Contains(mounts, []byte(needle)) {
			t.Errorf("a mount under %s remains", needle)
		}
	}
	for _, p := range []string{b.dir(c.Handle()), filepath.Join(cfg.DiskDir, "volumes", c.Handle()), filepath.Join(cfg.DiskDir, "images", c.Handle()+".img")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s remains", p)
		}
	}
	// What Destroy moved to the trash is removed in the background, soon.
	b.trash.Flush()
	b.disk.flush()
	for _, trash := range []string{filepath.Join(cfg.StateDir, dirTrash), filepath.Join(cfg.DiskDir, "trash")} {
		if left, err := os.ReadDir(trash); err != nil || len(left) > 0 {
			t.Errorf("the trash %s holds %v (%v)", trash, left, err)
		}
	}
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cfg.CgroupParent + "/" + c.Handle()); len(cgs) > 0 {
		t.Errorf("cgroups remain: %v", cgs)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", cfg.Network.BridgeName).Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("veths remain on the bridge: %s", out)
	}
	if out, _ := exec.Command("iptables-save").Output(); bytes.Contains(out, []byte(info.ContainerIP+"/")) || bytes.Contains(out, []byte(info.ContainerIP+":")) {
		t.Errorf("iptables rules for %s remain", info.ContainerIP)
	}
	if leases, _ := filepath.Glob(filepath.Join(cfg.Network.StateDir, "*", "*", info.ContainerIP)); len(leases) > 0 {
		t.Errorf("IP lease remains: %v", leases)
	}
	if _, err := http.Get(url); err == nil {
		t.Errorf("%s still answers after Destroy", url)
	}
}

func tarOf(t *testing.T, name, body string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, body)
	tw.Close()
	return &buf
}

func TestSurvivesBackend(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := newTestBackend(t, cfg)
	c := createContainer(t, b, func(s *isolation.ContainerSpec) { s.Properties = isolation.Properties{"app": "x"} })
	ctx := context.Background()
	if _, err := c.Run(ctx, isolation.ProcessSpec{ID: "late", Path: "/bin/sh", Args: []string{"-c", "echo started; sleep 0.5; echo done; exit 7"}}, isolation.ProcessIO{}); err != nil {
		t.Fatal(err)
	}
	b.Close() // the old backend is dropped; its container must not notice

	b2, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	found, err := b2.List(ctx, isolation.Properties{"app": "x"})
	if err != nil || len(found) != 1 || found[0].Handle() != c.Handle() {
		t.Fatalf("List after reopen: %v %v", found, err)
	}
	c2, err := b2.Lookup(ctx, c.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p, err := c2.Attach(ctx, "late", isolation.ProcessIO{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 7 {
		t.Fatalf("Wait after reopen = %d, %v; want 7", code, err)
	}
	if out.String() != "started\ndone\n" {
		t.Fatalf("output after reopen = %q", out.String())
	}
}

// The init runs inside the container with more privileges than its processes; a container
// process of the same uid must not reach its memory or environment through /proc.
func TestInitIsNotDumpable(t *testing.T) {
	t.Parallel()
	for _, privileged := range []bool{false, true} {
		b := newTestBackend(t, testConfig(t))
		c := createContainer(t, b, func(cs *isolation.ContainerSpec) { cs.Privileged = privileged })
		r := sh(t, c, "", `cat /proc/1/environ >/dev/null 2>&1 && echo environ readable
head -c 1 /proc/1/mem >/dev/null 2>&1 && echo mem readable
echo done`)
		if r.stdout != "done\n" {
			t.Fatalf("privileged %v: a container process looking at the init: %q (stderr %q)", privileged, r.stdout, r.stderr)
		}
	}
}
