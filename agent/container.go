package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// Executor lifecycle states of a container, as the agent's API shows them.
const (
	StateReserved     = "reserved"
	StateInitializing = "initializing"
	StateCreated      = "created"
	StateRunning      = "running"
	StateCompleted    = "completed"
)

// Kinds of work.
const (
	KindLRP  = "lrp"
	KindTask = "task"
)

// Container properties through which a restarted agent rebuilds its view of the host.
const (
	PropCell         = "trellis.cell_id"
	PropKind         = "trellis.kind"
	PropProcessGuid  = "trellis.process_guid"
	PropIndex        = "trellis.index"
	PropDomain       = "trellis.domain"
	PropInstanceGuid = "trellis.instance_guid"
	PropTaskGuid     = "trellis.task_guid"
	PropMemoryMB     = "trellis.memory_mb"
	PropDiskMB       = "trellis.disk_mb"
	// PropPhase is "setup" while the setup action runs and "action" once the main action
	// has been started.
	PropPhase = "trellis.phase"
	// PropPresence is the presence of the record the container answers for (EVACUATING once
	// it is evacuated).
	PropPresence = "trellis.presence"
	// PropProcesses lists the ids of the processes started in the container, comma-separated.
	PropProcesses = "trellis.processes"
	// PropOutcome holds a task's outcome (JSON) once its action finished, so that a restart
	// between the end of the task and CompleteTask reports it instead of losing it.
	PropOutcome = "trellis.outcome"
)

const (
	phaseSetup  = "setup"
	phaseAction = "action"
)

// taskOutcome is what CompleteTask reports.
type taskOutcome struct {
	Failed bool   `json:"failed"`
	Reason string `json:"failure_reason,omitempty"`
	Result string `json:"result,omitempty"`
}

// ContainerStatus is one container as the agent's API reports it.
type ContainerStatus struct {
	Handle       string                  `json:"handle"`
	Kind         string                  `json:"kind"`
	State        string                  `json:"state"`
	ProcessGuid  string                  `json:"process_guid,omitempty"`
	Index        int32                   `json:"index"`
	InstanceGuid string                  `json:"instance_guid,omitempty"`
	TaskGuid     string                  `json:"task_guid,omitempty"`
	Presence     string                  `json:"presence,omitempty"`
	Evacuating   bool                    `json:"evacuating,omitempty"`
	MemoryMB     int32                   `json:"memory_mb"`
	DiskMB       int32                   `json:"disk_mb"`
	NetInfo      models.ActualLRPNetInfo `json:"net_info"`
	Since        time.Time               `json:"since"`
	// Phase says what a container being created waits for, such as the pull of its image
	// ("docker:///app:1: pulling layer 2/5 (12.3 MB/40.1 MB)"); empty otherwise.
	Phase string `json:"phase,omitempty"`
}

// container is the agent's view of one piece of work on the cell, from the moment it is
// accepted (reserved) until its container is destroyed.
type container struct {
	handle   string
	kind     string
	key      models.ActualLRPKey // LRPs
	taskGuid string              // tasks
	res      models.Resources

	// Guarded by Agent.mu.
	state      string
	since      time.Time
	presence   string // the LRP record this container answers for
	seenRev    int64  // newest record revision observed for it
	claimed    bool   // the BBS knows this instance (CLAIMED or later) / the task started
	reported   bool   // StartActualLRP succeeded
	evacuating bool
	stopping   bool
	completing bool // the task's outcome is being reported by the agent itself
	netInfo    models.ActualLRPNetInfo
	phase      string             // see ContainerStatus.Phase
	desired    *models.DesiredLRP // what an LRP instance was started from (desired.go); read-only

	timing startTiming // written only by the work's own goroutine

	stopOnce   sync.Once
	stopCtx    context.Context // ended when the agent decides to stop the work
	stopWork   context.CancelFunc
	stopReason string
	done       chan struct{} // closed when the work's goroutine has finished
}

func newContainer(handle, kind string) *container {
	ctx, cancel := context.WithCancel(context.Background())
	return &container{
		handle: handle, kind: kind, state: StateReserved, since: time.Now(),
		presence: models.PresenceOrdinary, stopCtx: ctx, stopWork: cancel, done: make(chan struct{}),
	}
}

func (c *container) instanceKey(cellID string) models.ActualLRPInstanceKey {
	return models.ActualLRPInstanceKey{InstanceGuid: c.handle, CellID: cellID}
}

func (c *container) status() ContainerStatus {
	s := ContainerStatus{
		Handle: c.handle, Kind: c.kind, State: c.state, MemoryMB: c.res.MemoryMB, DiskMB: c.res.DiskMB,
		Since: c.since, NetInfo: c.netInfo, Phase: c.phase,
	}
	if c.kind == KindLRP {
		s.ProcessGuid, s.Index, s.InstanceGuid, s.Presence, s.Evacuating = c.key.ProcessGuid, c.key.Index, c.handle, c.presence, c.evacuating
	} else {
		s.TaskGuid, s.Index = c.taskGuid, -1
	}
	return s
}

// newGuid returns a random instance guid (UUID v4 form).
func newGuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// lrpProperties are the properties an LRP instance's container is created with.
func lrpProperties(cellID string, key models.ActualLRPKey, guid string, r models.Resources) isolation.Properties {
	return isolation.Properties{
		PropCell: cellID, PropKind: KindLRP, PropProcessGuid: key.ProcessGuid,
		PropIndex: strconv.Itoa(int(key.Index)), PropDomain: key.Domain, PropInstanceGuid: guid,
		PropMemoryMB: strconv.Itoa(int(r.MemoryMB)), PropDiskMB: strconv.Itoa(int(r.DiskMB)),
		PropPresence: models.PresenceOrdinary,
	}
}

// withPhase records phase setup in p when the work has a setup to run: a container is
// created in the phase it starts in, which spares rewriting its properties right away.
func withPhase(p isolation.Properties, setup bool) isolation.Properties {
	if setup {
		p[PropPhase] = phaseSetup
	}
	return p
}

// taskProperties are the properties a task's container is created with.
func taskProperties(cellID, taskGuid string, r models.Resources) isolation.Properties {
	return isolation.Properties{
		PropCell: cellID, PropKind: KindTask, PropTaskGuid: taskGuid,
		PropMemoryMB: strconv.Itoa(int(r.MemoryMB)), PropDiskMB: strconv.Itoa(int(r.DiskMB)),
	}
}

// resourcesOf reads the reservation recorded in properties.
func resourcesOf(p isolation.Properties) models.Resources {
	mem, _ := strconv.Atoi(p[PropMemoryMB])
	disk, _ := strconv.Atoi(p[PropDiskMB])
	return models.Resources{MemoryMB: int32(mem), DiskMB: int32(disk), Containers: 1}
}

// recordingContainer records the id of every process started in it in PropProcesses before
// starting it, so that a restarted agent can attach to the processes of an action tree it
// cannot resume (one with downloads or uploads) and learn how they ended.
type recordingContainer struct {
	isolation.Container
	mu sync.Mutex
}

func (r *recordingContainer) Run(ctx context.Context, spec isolation.ProcessSpec, stdio isolation.ProcessIO) (isolation.Process, error) {
	if spec.ID != "" {
		r.mu.Lock()
		props, err := r.Container.Properties(ctx)
		if err == nil {
			ids := splitList(props[PropProcesses])
			ids = append(ids, spec.ID)
			err = r.Container.SetProperty(ctx, PropProcesses, strings.Join(ids, ","))
		}
		r.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return r.Container.Run(ctx, spec, stdio)
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func encodeOutcome(o taskOutcome) string {
	b, _ := json.Marshal(o) // plain struct
	return string(b)
}

// resumable reports whether an action tree holds only run-like nodes, which a runner with
// Resume can attach to again after a restart (downloads and uploads would repeat).
func resumable(a *models.Action) bool {
	if a == nil {
		return true
	}
	switch {
	case a.Download != nil, a.Upload != nil:
		return false
	case a.Run != nil:
		return true
	case a.Timeout != nil:
		return resumable(a.Timeout.Action)
	case a.Try != nil:
		return resumable(a.Try.Action)
	case a.EmitProgress != nil:
		return resumable(a.EmitProgress.Action)
	case a.Serial != nil:
		return allResumable(a.Serial.Actions)
	case a.Parallel != nil:
		return allResumable(a.Parallel.Actions)
	case a.Codependent != nil:
		return allResumable(a.Codependent.Actions)
	}
	return true
}

func allResumable(as []*models.Action) bool {
	for _, a := range as {
		if !resumable(a) {
			return false
		}
	}
	return true
}

// hasEvent reports whether the container reported event (e.g. isolation.EventOutOfMemory).
func hasEvent(ctx context.Context, c isolation.Container, event string) bool {
	info, err := c.Info(ctx)
	if err != nil {
		return false
	}
	for _, e := range info.Events {
		if e == event {
			return true
		}
	}
	return false
}

// createContainer creates a container through the backend, at most
// Config.MaxConcurrentCreates at a time: creating is the expensive part of a start (file
// systems, cgroups, network), and a burst of hundreds at once would starve the heartbeat.
func (a *Agent) createContainer(ctx context.Context, spec isolation.ContainerSpec) (isolation.Container, error) {
	select {
	case a.creates <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-a.creates }()
	return a.backend.Create(ctx, spec)
}

// startTiming records when an instance passed each step of its start, so that the "instance
// running" log line says where a slow start spent its time. Zero times are steps not taken (a
// resumed instance was neither claimed nor created by this agent).
type startTiming struct {
	claimed, created, setUp, healthy time.Time
}

// since renders the steps as "create=… setup=… healthy=… report=…", each the time from the
// previous step, report ending at end.
func (t startTiming) since(end time.Time) string {
	steps := []struct {
		name string
		at   time.Time
	}{{"create", t.created}, {"setup", t.setUp}, {"healthy", t.healthy}, {"report", end}}
	var b strings.Builder
	prev := t.claimed
	for _, s := range steps {
		if s.at.IsZero() {
			continue
		}
		if !prev.IsZero() {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(s.name + "=" + s.at.Sub(prev).Round(time.Millisecond).String())
		}
		prev = s.at
	}
	return b.String()
}
