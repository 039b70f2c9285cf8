package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/agent/actions"
	"github.com/trellis-run/trellis/agent/health"
	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// startLRPLocked accepts an UNCLAIMED instance placed on this cell: it enters the table as
// reserved and its goroutine takes it from there. Callers hold a.mu.
func (a *Agent) startLRPLocked(rec *models.ActualLRP) {
	c := newContainer(newGuid(), KindLRP)
	c.key = rec.ActualLRPKey
	c.seenRev = rec.Revision
	a.addLocked(c)
	a.work.Go(func() { a.runLRP(c) })
}

// livenessFailureThreshold is how many liveness checks in a row must fail before a RUNNING
// instance is crashed: one slow answer while the cell is busy starting hundreds of containers
// is not a dead app.
const livenessFailureThreshold = 3

// sinks are the log writers of one instance: the workload's output, health-check results and
// the agent's own messages.
type sinks struct {
	app, health, cell *logs.Writer
}

func (a *Agent) openSinks(key string, index int) (*sinks, error) {
	inst := logs.Instance{Key: key, Index: index}
	var s sinks
	var err error
	if s.app, err = a.logs.Writer(logs.SourceApp, inst); err != nil {
		return nil, err
	}
	if s.health, err = a.logs.Writer(logs.SourceHealth, inst); err != nil {
		s.app.Close()
		return nil, err
	}
	if s.cell, err = a.logs.Writer(logs.SourceCell, inst); err != nil {
		s.app.Close()
		s.health.Close()
		return nil, err
	}
	return &s, nil
}

func (s *sinks) close() {
	s.app.Close()
	s.health.Close()
	s.cell.Close()
}

// setState moves c to an executor lifecycle state.
func (a *Agent) setState(c *container, state string) {
	a.mu.Lock()
	c.state, c.since = state, time.Now()
	a.mu.Unlock()
}

// runLRP takes one instance from reserved to its end: reserve, claim, create, setup, action,
// health, RUNNING; then crash or stop. It runs in its own goroutine.
func (a *Agent) runLRP(c *container) {
	defer close(c.done)
	log := a.log.With("process_guid", c.key.ProcessGuid, "index", c.key.Index, "instance", c.handle)
	if a.Draining() {
		a.rejectLRP(c, log, ReasonDraining)
		a.forget(c)
		return
	}
	// An app's first instance on the cell is claimed with its definition, the others from the
	// definition the cell holds: reserve, then claim. The reservation of the first comes after
	// its claim, and an instance the cell then cannot hold is given back.
	// No early heartbeat for the reservation: the instance's record names this cell, and the
	// auctioneer counts a cell's usage from the records (see presenceLoop).
	reserve := func(desired *models.DesiredLRP) bool {
		c.res = reservation(desired.MemoryMB, desired.DiskMB)
		if err := a.ledger.reserve(c.handle, c.res); err != nil {
			a.rejectLRP(c, log, err.Error())
			a.forget(c)
			return false
		}
		return true
	}
	desired, epoch := a.cachedDesired(c)
	var rec *models.ActualLRP
	var err error
	ctx, cancel := a.bbsCtx()
	if desired != nil {
		if !reserve(desired) {
			cancel()
			return
		}
		rec, err = a.store.ClaimActualLRP(ctx, c.key, c.instanceKey(a.cfg.CellID))
	} else if rec, desired, err = a.store.ClaimActualLRPWithDesired(ctx, c.key, c.instanceKey(a.cfg.CellID)); err == nil {
		a.keepDesired(c, desired, epoch)
		if !reserve(desired) {
			cancel()
			return
		}
	}
	cancel()
	if err != nil {
		// The next reconcile tries again while the instance is still placed here.
		log.Info("claiming the instance failed; leaving it", "error", err)
		a.forget(c)
		return
	}
	a.mu.Lock()
	c.claimed, c.seenRev = true, max(c.seenRev, rec.Revision)
	a.mu.Unlock()
	log.Info("claimed instance")

	a.setState(c, StateInitializing)
	c.timing.claimed = time.Now()
	pull := a.newPullProgress(c, int(c.key.Index))
	cont, err := a.createContainer(c.stopCtx, isolation.ContainerSpec{
		Handle:     c.handle,
		RootFS:     desired.RootFS,
		Limits:     limits(desired.MemoryMB, desired.DiskMB, desired.CPUWeight, desired.MaxPids),
		NetIn:      netIn(desired.Ports),
		Properties: withPhase(lrpProperties(a.cfg.CellID, c.key, c.handle, c.res), desired.Setup != nil),
		Privileged: desired.Privileged,
		ImageAuth:  imageAuth(desired.ImageUsername, desired.ImagePassword),
		Progress:   pull,
	})
	pull.done()
	c.timing.created = time.Now()
	if err != nil {
		if c.stopCtx.Err() == nil {
			a.crashLRP(c, log, "failed to create container: "+err.Error())
		}
		a.backend.Destroy(context.Background(), c.handle)
		a.forget(c)
		return
	}
	a.superviseLRP(c, cont, desired, false, log)
}

// superviseLRP runs an instance whose container exists: setup (unless resuming), the action,
// startup health checks, the RUNNING report, liveness checks; then reports a crash, or stops
// the container when asked, and destroys it. When Run returns meanwhile it leaves the
// container running for the next agent.
func (a *Agent) superviseLRP(c *container, cont isolation.Container, desired *models.DesiredLRP, resume bool, log *slog.Logger) {
	sk, err := a.openSinks(c.handle, int(c.key.Index))
	if err != nil {
		log.Error("opening the instance's log", "error", err)
		a.finishLRP(c, cont, "failed to open the instance log: "+err.Error(), log)
		return
	}
	defer sk.close()
	a.setState(c, StateCreated)

	info, err := cont.Info(c.stopCtx)
	if err != nil {
		a.finishLRP(c, cont, "failed to inspect container: "+err.Error(), log)
		return
	}
	if desired, err = withImageLRP(desired, info.Image); err != nil {
		a.finishLRP(c, cont, "image: "+err.Error(), log)
		return
	}
	ni := netInfo(info, desired.Ports)
	a.mu.Lock()
	c.netInfo = ni
	a.mu.Unlock()
	runner := func(prefix string, resume bool) (*actions.Runner, error) {
		return actions.NewRunner(actions.Config{
			Container:  &recordingContainer{Container: cont},
			Cache:      a.cache,
			HTTPClient: a.http,
			Env:        envList(desired.Env),
			Instance: &actions.InstanceEnv{GUID: c.handle, Index: int(c.key.Index), HostIP: info.HostIP,
				ContainerIP: info.ContainerIP, Ports: ni.Ports},
			Output: sk.app, Progress: sk.cell, Logger: log,
			GracePeriod: time.Duration(a.cfg.GracefulStop), ProcessIDPrefix: prefix, Resume: resume,
		})
	}

	if !resume && desired.Setup != nil {
		// The container was created in phase setup (lrpProperties).
		r, err := runner(phaseSetup, false)
		if err == nil {
			err = r.Run(c.stopCtx, desired.Setup)
		}
		if err != nil {
			a.finishLRP(c, cont, "setup failed: "+a.failureReason(cont, err), log)
			return
		}
	}
	c.timing.setUp = time.Now()
	if err := cont.SetProperty(c.stopCtx, PropPhase, phaseAction); err != nil {
		a.finishLRP(c, cont, "failed to record the instance's phase: "+err.Error(), log)
		return
	}
	actionDone := make(chan error, 1)
	if resume && !resumable(desired.Action) {
		go func() { actionDone <- waitRecorded(c.stopCtx, cont, true) }()
	} else {
		r, err := runner(phaseAction, resume)
		if err != nil {
			a.finishLRP(c, cont, "invalid action: "+err.Error(), log)
			return
		}
		go func() { actionDone <- r.Run(c.stopCtx, desired.Action) }()
	}

	checker, err := health.NewChecker(health.Config{
		Resolve: checkAddress(info.HostIP, info.ContainerIP, ni.Ports), Sink: sk.health, Logger: log,
		StartupInterval: health.DefaultStartupInterval, Interval: health.DefaultInterval,
		Timeout: health.DefaultTimeout, FailureThreshold: livenessFailureThreshold,
	})
	if err != nil {
		a.endLRP(c, cont, "invalid health check: "+err.Error(), actionDone, log)
		return
	}
	hasChecks := desired.CheckDefinition != nil && len(desired.CheckDefinition.Checks) > 0
	startTimeout := time.Duration(desired.StartTimeoutMs) * time.Millisecond
	if startTimeout <= 0 {
		startTimeout = defaultStartTimeout
	}
	hctx, hcancel := context.WithCancel(c.stopCtx)
	defer hcancel()
	healthy := make(chan error, 1)
	go func() {
		if !hasChecks {
			healthy <- nil
			return
		}
		healthy <- checker.WaitHealthy(hctx, desired.CheckDefinition, startTimeout)
	}()
	select {
	case err := <-actionDone:
		a.endLRP(c, cont, a.exitReason(cont, err), nil, log)
		return
	case err := <-healthy:
		if err != nil {
			a.endLRP(c, cont, a.failureReason(cont, err), actionDone, log)
			return
		}
	case <-a.closed:
		return
	}

	c.timing.healthy = time.Now()
	ctx, cancel := a.bbsCtx()
	rec, err := a.store.StartActualLRP(ctx, c.key, c.instanceKey(a.cfg.CellID), ni)
	cancel()
	if err != nil {
		if a.isClosed() {
			return
		}
		log.Warn("reporting the instance RUNNING failed; stopping it", "error", err)
		a.mu.Lock()
		a.stopLocked(c, "the BBS refused the RUNNING report: "+err.Error())
		a.mu.Unlock()
		a.endLRP(c, cont, "", actionDone, log)
		return
	}
	a.mu.Lock()
	c.reported, c.seenRev = true, max(c.seenRev, rec.Revision)
	c.state, c.since = StateRunning, time.Now()
	draining := a.draining
	a.mu.Unlock()
	log.Info("instance running", "address", ni.Address, "ports", ni.Ports, "timing", c.timing.since(time.Now()))
	if draining {
		a.work.Go(func() { a.evacuateOne(c) })
	}

	// Without checks no goroutine watches the instance: it ends with its action or when
	// stopped (a goroutine per instance that only waited for the stop was a share of every
	// running instance's memory).
	var live <-chan error
	if hasChecks {
		ch := make(chan error, 1)
		go func() { ch <- checker.Monitor(hctx, desired.CheckDefinition) }()
		live = ch
	}
	select {
	case err := <-actionDone:
		a.endLRP(c, cont, a.exitReason(cont, err), nil, log)
	case err := <-live:
		a.endLRP(c, cont, a.failureReason(cont, err), actionDone, log)
	case <-hctx.Done():
		a.endLRP(c, cont, a.failureReason(cont, hctx.Err()), actionDone, log)
	case <-a.closed:
	}
}

// endLRP ends an instance: unless it was stopped on purpose it reports the crash with reason;
// then it stops what still runs (actionDone, when non-nil, is the action still running) and
// destroys the container.
func (a *Agent) endLRP(c *container, cont isolation.Container, reason string, actionDone <-chan error, log *slog.Logger) {
	if a.isClosed() {
		return
	}
	if c.stopCtx.Err() == nil && reason != "" {
		a.crashLRP(c, log, reason)
	}
	a.mu.Lock()
	a.stopLocked(c, "crashed: "+reason)
	a.mu.Unlock()
	if actionDone != nil {
		select {
		case <-actionDone:
		case <-time.After(time.Duration(a.cfg.GracefulStop) + 30*time.Second):
			log.Warn("the action did not end after being stopped")
		}
	}
	a.destroy(c, cont, log)
}

// finishLRP crashes an instance that failed before its action ran, and destroys it.
func (a *Agent) finishLRP(c *container, cont isolation.Container, reason string, log *slog.Logger) {
	if a.isClosed() {
		return
	}
	if c.stopCtx.Err() == nil {
		a.crashLRP(c, log, reason)
	}
	a.destroy(c, cont, log)
}

// destroy stops every process of the container (SIGTERM, SIGKILL after GracefulStop) and
// destroys it, then forgets the work.
func (a *Agent) destroy(c *container, cont isolation.Container, log *slog.Logger) {
	a.setState(c, StateCompleted)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.cfg.GracefulStop)+time.Minute)
	defer cancel()
	if cont != nil {
		if err := cont.Stop(ctx, time.Duration(a.cfg.GracefulStop), false); err != nil && !isolation.IsNotFound(err) {
			log.Warn("stopping the container", "error", err)
		}
	}
	if err := a.backend.Destroy(ctx, c.handle); err != nil {
		log.Error("destroying the container", "error", err)
	}
	log.Info("container destroyed", "reason", c.stopReason)
	a.forget(c)
}

// crashLRP reports the instance CRASHED with reason.
func (a *Agent) crashLRP(c *container, log *slog.Logger, reason string) {
	log.Info("instance crashed", "reason", reason)
	ctx, cancel := a.bbsCtx()
	defer cancel()
	if _, err := a.store.CrashActualLRP(ctx, c.key, c.instanceKey(a.cfg.CellID), reason); err != nil {
		log.Warn("reporting the crash", "reason", reason, "error", err)
	}
}

// rejectLRP hands an instance placed here back to the auctioneer with reason.
func (a *Agent) rejectLRP(c *container, log *slog.Logger, reason string) {
	log.Info("rejecting instance", "reason", reason)
	ctx, cancel := a.bbsCtx()
	defer cancel()
	if _, err := a.store.RejectActualLRP(ctx, c.key, a.cfg.CellID, reason); err != nil {
		log.Warn("rejecting the instance", "reason", reason, "error", err)
	}
}

// exitReason is the crash reason of an action that ended with err (nil: it exited 0).
func (a *Agent) exitReason(cont isolation.Container, err error) string {
	if err == nil {
		if hasEvent(context.Background(), cont, isolation.EventOutOfMemory) {
			return ReasonOutOfMemory
		}
		return "exited with status 0"
	}
	return a.failureReason(cont, err)
}

// failureReason is the reason reported for err: "out of memory" when the container reported
// an OOM event, "disk limit exceeded" when its process exited while its disk was at its limit,
// else actions.Reason.
func (a *Agent) failureReason(cont isolation.Container, err error) string {
	var exit *actions.ExitError
	if (errors.As(err, &exit) && exit.OutOfMemory) || hasEvent(context.Background(), cont, isolation.EventOutOfMemory) {
		return ReasonOutOfMemory
	}
	if errors.As(err, &exit) && hasEvent(context.Background(), cont, isolation.EventDiskLimit) {
		return ReasonDiskLimit + " (" + actions.Reason(err) + ")"
	}
	return actions.Reason(err)
}

// waitRecorded attaches to the processes recorded in the container (see recordingContainer)
// and waits: with first, until one of them exits (an LRP's processes are codependent); else
// until the last recorded one exits (a task's outcome is its last process). It returns nil for
// exit status 0, an *actions.ExitError otherwise. Errors: no process was recorded
// (ErrSetupInterrupted-like, as a plain error), or ctx's.
func waitRecorded(ctx context.Context, cont isolation.Container, first bool) error {
	props, err := cont.Properties(ctx)
	if err != nil {
		return err
	}
	ids := splitList(props[PropProcesses])
	if len(ids) == 0 {
		return errors.New(ReasonSetupInterrupted)
	}
	if !first {
		ids = ids[len(ids)-1:]
	}
	type result struct {
		id     string
		status int
		err    error
	}
	results := make(chan result, len(ids))
	waiting := 0
	for _, id := range ids {
		p, err := cont.Attach(ctx, id, isolation.ProcessIO{})
		if err != nil {
			if isolation.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("attach to process %s: %w", id, err)
		}
		waiting++
		go func() {
			status, err := p.Wait(ctx)
			results <- result{id, status, err}
		}()
	}
	if waiting == 0 {
		return errors.New(ReasonSetupInterrupted)
	}
	r := <-results
	if r.err != nil {
		return r.err
	}
	if r.status != 0 {
		return &actions.ExitError{Path: "process " + r.id, Status: r.status}
	}
	return nil
}

// defaultStartTimeout bounds the startup checks of an LRP without start_timeout_ms.
const defaultStartTimeout = 60 * time.Second

// checkAddress returns how a check reaches a container port: the container's own address when
// it has one (checks run against the instance, as Diego's run inside the container), else the
// host address of the port's mapping.
func checkAddress(hostIP, containerIP string, ports []models.PortMapping) func(uint32) (string, error) {
	return func(port uint32) (string, error) {
		p := strconv.FormatUint(uint64(port), 10)
		if containerIP != "" {
			return net.JoinHostPort(containerIP, p), nil
		}
		for _, m := range ports {
			if m.ContainerPort == port {
				return net.JoinHostPort(hostIP, strconv.FormatUint(uint64(m.HostPort), 10)), nil
			}
		}
		return "", fmt.Errorf("port %d is not mapped and the container has no address of its own", port)
	}
}

// limits translates a work's resources into container limits.
func limits(memoryMB, diskMB int32, cpuWeight uint32, maxPids int32) isolation.Limits {
	return isolation.Limits{
		MemoryBytes: uint64(max(memoryMB, 0)) << 20,
		DiskBytes:   uint64(max(diskMB, 0)) << 20,
		CPUWeight:   cpuWeight,
		Pids:        uint64(max(maxPids, 0)),
	}
}

func netIn(ports []uint32) []isolation.NetIn {
	out := make([]isolation.NetIn, len(ports))
	for i, p := range ports {
		out[i] = isolation.NetIn{ContainerPort: p}
	}
	return out
}

// netInfo is where the instance answers: the host address and the mappings of the desired
// ports, in the desired order.
func netInfo(info isolation.ContainerInfo, ports []uint32) models.ActualLRPNetInfo {
	n := models.ActualLRPNetInfo{Address: info.HostIP, InstanceAddress: info.ContainerIP}
	for _, p := range ports {
		for _, m := range info.MappedPorts {
			if m.ContainerPort == p {
				n.Ports = append(n.Ports, models.PortMapping{ContainerPort: p, HostPort: m.HostPort})
				break
			}
		}
	}
	return n
}

func envList(env []models.EnvironmentVariable) []string {
	out := make([]string, len(env))
	for i, e := range env {
		out[i] = e.Name + "=" + e.Value
	}
	return out
}
