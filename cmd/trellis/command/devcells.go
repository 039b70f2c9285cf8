package command

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	isolationlinux "github.com/trellis-run/trellis/isolation_linux"
)

// devCellSpec describes one cell of a dev cluster, as written in a --cells-file.
type devCellSpec struct {
	ID                    string   `json:"id"`
	Zone                  string   `json:"zone,omitempty"`
	PlacementTags         []string `json:"placement_tags,omitempty"`
	OptionalPlacementTags []string `json:"optional_placement_tags,omitempty"`
	// Stacks are the preloaded stacks the cell provides; each is the busybox root filesystem
	// under another name, so rootfs pinning can be tried on one machine. Default ["busybox"].
	Stacks []string `json:"stacks,omitempty"`
	// MemoryMB and Containers override the cell's capacity (0 = the machine's).
	MemoryMB   int32 `json:"memory_mb,omitempty"`
	Containers int32 `json:"containers,omitempty"`
}

// devCellsFile is the --cells-file document.
type devCellsFile struct {
	Cells []devCellSpec `json:"cells"`
}

// defaultDevCells returns n cells spread over up to three zones, each providing the busybox
// stack.
func defaultDevCells(n int) []devCellSpec {
	cells := make([]devCellSpec, n)
	for i := range cells {
		cells[i] = devCellSpec{ID: fmt.Sprintf("cell-%d", i+1), Zone: fmt.Sprintf("z%d", i%3+1)}
	}
	return cells
}

// loadDevCells reads a --cells-file and checks every cell, naming the one at fault.
func loadDevCells(path string) ([]devCellSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc devCellsFile
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(doc.Cells) == 0 {
		return nil, fmt.Errorf("%s: cells: list at least one cell", path)
	}
	seen := map[string]bool{}
	for i, c := range doc.Cells {
		field := fmt.Sprintf("%s: cells[%d]", path, i)
		if err := models.ValidateCellID(field+".id", c.ID); err != nil {
			return nil, err
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("%s.id: %q is listed twice", field, c.ID)
		}
		seen[c.ID] = true
		for j, s := range c.Stacks {
			if err := models.ValidateRootFSProvider(fmt.Sprintf("%s.stacks[%d]", field, j), "preloaded:"+s); err != nil {
				return nil, err
			}
		}
		if c.MemoryMB < 0 || c.Containers < 0 {
			return nil, fmt.Errorf("%s: memory_mb and containers must not be negative", field)
		}
	}
	return doc.Cells, nil
}

// devNetwork is the address plan of one dev cluster. Clusters in different data dirs get
// different bridges, subnets and host ports, so a test cluster can run beside `make run`.
type devNetwork struct {
	bridgePrefix string // "trd" + 6 hex digits of the data dir's hash
	octet        int    // the cluster's 10.<octet>.0.0/16
	portBase     uint32 // first host port of the cluster's window
}

// maxDevCells is how many cells a dev cluster's 10.<x>.0.0/16 holds at a /22 each.
const maxDevCells = 63

// devPortsPerCluster is the size of a cluster's host port window: 50 windows fit in 20000-59999.
const devPortsPerCluster = 800

// devClusterID names the dev cluster of an absolute data dir: "trd" and 6 hex digits of the
// path's hash. It is the cluster's bridge prefix and its cells root under devCellsRootBase.
func devClusterID(dataDir string) string {
	h := fnv.New32a()
	io.WriteString(h, dataDir)
	return fmt.Sprintf("trd%06x", h.Sum32()&0xffffff)
}

func planDevNetwork(dataDir string) (devNetwork, error) {
	h := fnv.New32a()
	io.WriteString(h, dataDir)
	sum := h.Sum32()
	plan := devNetwork{bridgePrefix: devClusterID(dataDir)}
	// Use the first 10.<x>.0.0/16 from the hash on that no interface of another cluster or of
	// the host has an address in.
	used, err := usedTenOctets(plan.bridgePrefix)
	if err != nil {
		return plan, err
	}
	for i := 0; i < 50; i++ {
		x := 200 + (int(sum%50)+i)%50
		if !used[x] {
			plan.octet = x
			plan.portBase = 20000 + uint32(x-200)*devPortsPerCluster
			return plan, nil
		}
	}
	return plan, errors.New("dev: every 10.200-249.0.0/16 subnet is in use on this host; remove old trd* bridges (ip link del ...)")
}

// usedTenOctets returns x for every 10.x.0.0/16 holding an address of an interface that is not
// one of this cluster's bridges.
func usedTenOctets(ownPrefix string) (map[int]bool, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, ifc := range ifaces {
		if strings.HasPrefix(ifc.Name, ownPrefix) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 {
					used[int(ip4[1])] = true
				}
			}
		}
	}
	return used, nil
}

// devCell is one running cell agent process.
type devCell struct {
	spec    devCellSpec
	dir     string
	config  agent.Config
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

// prepareDevCells writes each cell's certificates and agent configuration.
func prepareDevCells(dataDir, bbsURL string, pki *certs.DevPKI, specs []devCellSpec, stackDir string, presenceTTL time.Duration) ([]*devCell, error) {
	plan, err := planDevNetwork(dataDir)
	if err != nil {
		return nil, err
	}
	if len(specs) > maxDevCells {
		return nil, fmt.Errorf("dev: %d cells: at most %d fit the cluster's address plan", len(specs), maxDevCells)
	}
	perCell := uint32(devPortsPerCluster / len(specs))
	root, err := devCellsRoot(plan)
	if err != nil {
		return nil, err
	}
	var cells []*devCell
	for i, s := range specs {
		dir := filepath.Join(root, s.ID)
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, err
		}
		cellCert, err := pki.IssueCell(s.ID)
		if err != nil {
			return nil, err
		}
		apiAddr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		apiCert, err := pki.IssueAgentServer(s.ID, []string{"127.0.0.1", "localhost"})
		if err != nil {
			return nil, err
		}
		cfg := agent.DefaultConfig()
		cfg.CellID = s.ID
		if s.Zone != "" {
			cfg.Zone = s.Zone
		}
		cfg.BBS = agent.BBSConfig{URL: bbsURL, CAFile: pki.CAFile, CertFile: cellCert.CertFile, KeyFile: cellCert.KeyFile}
		cfg.Capacity = agent.CapacityConfig{MemoryMB: s.MemoryMB, Containers: s.Containers}
		stacks := s.Stacks
		if len(stacks) == 0 {
			stacks = []string{"busybox"}
		}
		cfg.RootFSProviders = map[string]string{}
		for _, st := range stacks {
			cfg.RootFSProviders["preloaded:"+st] = stackDir
		}
		// Every dev cell also runs Docker/OCI images pulled from a registry.
		cfg.RootFSProviders["docker"] = ""
		cfg.RootFSProviders["oci"] = ""
		cfg.PlacementTags, cfg.OptionalPlacementTags = s.PlacementTags, s.OptionalPlacementTags
		cfg.DataDir = dir
		cfg.Backend = agent.BackendLinux
		cfg.PresenceTTL = agent.Duration(presenceTTL)
		// Short timeouts suit a machine where cells come and go by hand.
		cfg.EvacuationTimeout = agent.Duration(2 * time.Minute)
		cfg.GracefulStop = agent.Duration(5 * time.Second)
		cfg.API = agent.APIConfig{Listen: apiAddr, CertFile: apiCert.CertFile, KeyFile: apiCert.KeyFile, CAFile: pki.CAFile}
		lo := plan.portBase + uint32(i)*perCell
		cfg.Linux = agent.LinuxConfig{
			CgroupParent: "trellis-dev-" + plan.bridgePrefix[3:] + "/" + s.ID,
			BridgeName:   fmt.Sprintf("%s-%d", plan.bridgePrefix, i+1),
			NetworkName:  fmt.Sprintf("%s-%d", plan.bridgePrefix, i+1),
			// A /22 per cell: room for a thousand containers on one cell.
			Subnet:        fmt.Sprintf("10.%d.%d.0/22", plan.octet, (i+1)*4),
			HostIP:        "127.0.0.1",
			HostPortRange: [2]uint32{lo, lo + perCell - 1},
		}
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("cell %s: %w", s.ID, err)
		}
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), data, 0o600); err != nil {
			return nil, err
		}
		cells = append(cells, &devCell{spec: s, dir: dir, config: cfg})
	}
	return cells, nil
}

// devCellsRootBase holds the cells of every dev cluster on the machine. Unprivileged containers'
// root is an unprivileged host user that must be able to traverse the path to their overlay
// directories, so the cells cannot live under a data dir in a private home directory.
const devCellsRootBase = "/var/lib/trellis/dev"

// devCellsRoot returns the directory of this cluster's cells (one per data dir), creating it
// with every component searchable by others.
func devCellsRoot(plan devNetwork) (string, error) {
	root := filepath.Join(devCellsRootBase, plan.bridgePrefix)
	if err := os.MkdirAll(root, 0o711); err != nil {
		return "", err
	}
	// As on a systemd host, where / is a shared mount, so that the cells' backends keep their
	// pools of started container inits (they need mounts made later to reach those inits).
	if _, err := isolationlinux.EnsureSharedMount(root); err != nil {
		return "", fmt.Errorf("dev: make %s a shared mount: %w", root, err)
	}
	for d := root; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return "", err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return "", fmt.Errorf("dev: make %s searchable for unprivileged containers: %w", d, err)
			}
		}
	}
	return root, nil
}

// freeLoopbackAddr returns 127.0.0.1:<a port nothing listens on now>.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs the cell's agent as a child process (`trellis agent run`), its output appended to
// agent.log in the cell's directory. A child process, not a goroutine, so that killing it is a
// real cell loss: its heartbeat stops, its containers keep running.
func (c *devCell) start(self, logLevel string) error {
	logf, err := os.OpenFile(filepath.Join(c.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c.cmd = exec.Command(self, "agent", "run", "--config", filepath.Join(c.dir, "agent.yaml"), "--log-level", logLevel)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Its own process group: Ctrl-C in the terminal goes to `trellis dev`, which decides how
	// the cells stop.
	ownProcessGroup(c.cmd)
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start cell %s: %w", c.spec.ID, err)
	}
	c.exited = make(chan struct{})
	go func() {
		c.exitErr = c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return nil
}

// stop ends the agent at once (no drain: every cell of the dev cluster stops together, so
// there is nowhere to evacuate to), then destroys its containers, so nothing of the cluster
// keeps running on the machine. The records stay in etcd: on the next start the agents report
// the vanished containers and the brain starts them again.
func (c *devCell) stop(ctx context.Context, logger *slog.Logger) {
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	n, err := agent.DestroyContainers(ctx, c.config, logger)
	if err != nil {
		logger.Warn("destroying the cell's containers", "cell", c.spec.ID, "err", err)
		return
	}
	if n > 0 {
		logger.Info("destroyed the cell's containers", "cell", c.spec.ID, "containers", n)
	}
}

// stopAll stops every cell concurrently.
func stopAll(ctx context.Context, cells []*devCell, logger *slog.Logger) {
	var wg sync.WaitGroup
	for _, c := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(ctx, logger)
		}()
	}
	wg.Wait()
}
