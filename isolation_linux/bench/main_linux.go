package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
)

func main() {
	isolationlinux.MaybeRunInit()
	if len(os.Args) > 1 && os.Args[1] == "peer-in-private-mounts" {
		os.Exit(peerChild(os.Args[2:]))
	}
	runs := flag.Int("n", 50, "measured runs per line (after 3 warm-up runs)")
	cni := flag.Bool("cni", true, "also measure trellis with CNI bridge networking")
	peers := flag.Bool("peers", true, "also measure runc and crun (off only to profile trellis alone)")
	initBin := flag.String("init", "", "the binary containers run as their init (the trellis binary); empty means this bench binary, which under-reports what users get")
	flag.Parse()
	if err := run(*runs, *cni, *peers, *initBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n int, cni, peers bool, initBin string) error {
	base, err := os.MkdirTemp("", "trellis-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	stack := filepath.Join(base, "busybox")
	if err := isolationlinux.BuildBusyboxStack(stack, ""); err != nil {
		return err
	}
	// The backend keeps its pool of started container inits only where the mounts under its
	// directories propagate, as they do on a systemd host (/ is shared); make that so here.
	unshare, err := isolationlinux.ShareMount(base)
	if err != nil {
		return err
	}
	defer unshare()
	ctx := context.Background()
	open := func(name string, poolSize int) (*isolationlinux.Backend, func(), error) {
		cfg := isolationlinux.DefaultConfig()
		cfg.StateDir = filepath.Join(base, name, "state")
		cfg.LayerCacheDir = filepath.Join(base, "layers")
		cfg.DiskDir = filepath.Join(base, name, "disk")
		cfg.Stacks = map[string]string{"busybox": stack}
		cfg.InitBinary = initBin
		cfg.InitPoolSize = poolSize
		cfg.CgroupParent = fmt.Sprintf("trellis-bench-%d-%s", os.Getpid(), name)
		cfg.Network.StateDir = filepath.Join(base, "net")
		cfg.Network.BridgeName = fmt.Sprintf("trb%d", os.Getpid())
		cfg.Network.NetworkName = fmt.Sprintf("trellis-bench-%d", os.Getpid())
		cfg.Network.Subnet = fmt.Sprintf("10.%d.%d.0/24", 150+os.Getpid()%50, os.Getpid()%250)
		if err := os.MkdirAll(filepath.Join(base, name), 0o711); err != nil {
			return nil, nil, err
		}
		b, err := isolationlinux.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return nil, nil, err
		}
		return b, func() {
			if err := b.UninstallNetwork(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "uninstall the bench network:", err)
			}
			b.Close()
			dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cfg.CgroupParent)
			for _, d := range append(dirs, "/sys/fs/cgroup/"+cfg.CgroupParent) {
				os.Remove(d)
			}
		}, nil
	}
	b, closeB, err := open("pool", isolationlinux.DefaultInitPoolSize)
	if err != nil {
		return err
	}
	defer closeB()
	cold, closeCold, err := open("nopool", 0)
	if err != nil {
		return err
	}
	defer closeCold()

	bundle, err := makeBundle(base, stack)
	if err != nil {
		return err
	}

	fmt.Printf("isolation: container start = create + run /bin/true + wait + destroy, busybox rootfs, %d runs\n", n)
	trellis, err := measure(n, func(i int) error { return trellisOnce(ctx, b, i, isolation.NetworkNone) })
	if err != nil {
		return fmt.Errorf("trellis: %w", err)
	}
	noPool, err := measure(n, func(i int) error { return trellisOnce(ctx, cold, i, isolation.NetworkNone) })
	if err != nil {
		return fmt.Errorf("trellis without the init pool: %w", err)
	}
	var runc, crun []time.Duration
	if !peers {
		// Profiling trellis alone.
	} else if _, err := exec.LookPath("runc"); err == nil {
		if runc, err = measure(n, func(i int) error {
			return quiet(exec.Command("runc", "run", "--bundle", bundle, fmt.Sprintf("bench-runc-%d-%d", os.Getpid(), i)))
		}); err != nil {
			return fmt.Errorf("runc: %w", err)
		}
	} else {
		fmt.Println("runc run: not installed")
	}
	if !peers {
		// Profiling trellis alone.
	} else if _, err := exec.LookPath("crun"); err == nil {
		if crun, err = crunTimes(n, bundle); err != nil {
			return fmt.Errorf("crun: %w", err)
		}
	} else {
		fmt.Println("crun run: not installed")
	}
	report(fmt.Sprintf("trellis (userns, cgroup, overlay, seccomp; init pool %d)", isolationlinux.DefaultInitPoolSize), trellis, crun)
	report("trellis, init pool off", noPool, crun)
	if runc != nil {
		report("runc run", runc, crun)
	}
	if crun != nil {
		report("crun run", crun, nil)
	}

	if cni {
		withNet, err := measure(n, func(i int) error { return trellisOnce(ctx, b, i, isolation.NetworkBridge) })
		if err != nil {
			return fmt.Errorf("trellis with CNI: %w", err)
		}
		report("trellis + CNI bridge networking (init pool on)", withNet, crun)
	}
	return nil
}

func trellisOnce(ctx context.Context, b *isolationlinux.Backend, i int, mode isolation.NetworkMode) error {
	handle := fmt.Sprintf("bench-%d-%s-%d", os.Getpid(), mode, i)
	c, err := b.Create(ctx, isolation.ContainerSpec{Handle: handle, RootFS: "preloaded:busybox", Network: mode})
	if err != nil {
		return err
	}
	destroyed := false
	defer func() {
		// A failed run must not leave its container (and so the bench's cgroups and network).
		if !destroyed {
			b.Destroy(context.WithoutCancel(ctx), handle)
		}
	}()
	p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/bin/true"}, isolation.ProcessIO{})
	if err != nil {
		return err
	}
	code, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("/bin/true exited %d", code)
	}
	destroyed = true
	return b.Destroy(ctx, handle)
}

// measure runs once 3 times unmeasured, then n times, and returns the durations.
func measure(n int, once func(i int) error) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < n+3; i++ {
		start := time.Now()
		if err := once(i); err != nil {
			return nil, err
		}
		if i >= 3 {
			out = append(out, time.Since(start))
		}
	}
	return out, nil
}

func quiet(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeBundle writes an OCI bundle running /bin/true on a copy of the busybox stack, from the
// default spec `runc spec` writes.
func makeBundle(base, stack string) (string, error) {
	bundle := filepath.Join(base, "bundle")
	if err := os.Mkdir(bundle, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-a", stack, filepath.Join(bundle, "rootfs")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cp: %v: %s", err, out)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return bundle, nil
	}
	if err := quiet(exec.Command("runc", "spec", "--bundle", bundle)); err != nil {
		return "", err
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"/bin/true"}
	s.Root.Path = filepath.Join(bundle, "rootfs")
	raw, err = json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return "", err
	}
	return bundle, os.WriteFile(path, raw, 0o644)
}

// crunTimes measures crun in a child with a private mount namespace, where the hybrid
// hierarchy's /sys/fs/cgroup/unified is unmounted (crun refuses hybrid mode); the child times
// only the crun runs.
func crunTimes(n int, bundle string) ([]time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("unshare", "-m", self, "peer-in-private-mounts", fmt.Sprint(n), bundle)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var nanos []int64
	if err := json.Unmarshal(out, &nanos); err != nil {
		return nil, fmt.Errorf("reading crun timings: %w", err)
	}
	ds := make([]time.Duration, len(nanos))
	for i, v := range nanos {
		ds[i] = time.Duration(v)
	}
	return ds, nil
}

func peerChild(args []string) int {
	var n int
	if len(args) != 2 {
		return 2
	}
	fmt.Sscan(args[0], &n)
	bundle := args[1]
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Unmount("/sys/fs/cgroup/unified", 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		fmt.Fprintln(os.Stderr, "unmounting /sys/fs/cgroup/unified:", err)
		return 1
	}
	ds, err := measure(n, func(i int) error {
		return quiet(exec.Command("crun", "run", "--bundle", bundle, fmt.Sprintf("bench-crun-%d-%d", os.Getpid(), i)))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nanos := make([]int64, len(ds))
	for i, d := range ds {
		nanos[i] = int64(d)
	}
	json.NewEncoder(os.Stdout).Encode(nanos)
	return 0
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p*float64(len(s))+0.5) - 1
	idx = max(0, min(idx, len(s)-1))
	return s[idx]
}

func ms(d time.Duration) string { return fmt.Sprintf("%6.2f ms", float64(d)/float64(time.Millisecond)) }

// report prints one line; against, when set, is crun's figures, printed as the ratio
// line/crun (below 1 means the line is faster than crun).
func report(name string, ds, against []time.Duration) {
	p50, p95 := percentile(ds, 0.50), percentile(ds, 0.95)
	line := fmt.Sprintf("  %-56s p50 %s  p95 %s", name, ms(p50), ms(p95))
	if against != nil {
		line += fmt.Sprintf("   /crun p50 %.2fx p95 %.2fx",
			float64(p50)/float64(percentile(against, 0.50)), float64(p95)/float64(percentile(against, 0.95)))
	}
	fmt.Println(line)
}
