package models

import "encoding/json"

// EnvironmentVariable is one NAME=value pair handed to a process.
type EnvironmentVariable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Resources are what one container reserves on a cell.
type Resources struct {
	MemoryMB   int32 `json:"memory_mb"`
	DiskMB     int32 `json:"disk_mb"`
	Containers int32 `json:"containers"`
}

// PortMapping maps a container port to a port on the cell's host address.
type PortMapping struct {
	ContainerPort uint32 `json:"container_port"`
	HostPort      uint32 `json:"host_port"`
}

// RestartPolicy is the crash policy of a DesiredLRP. The zero value means Diego's defaults
// (see DefaultRestartPolicy): crashes 1..ImmediateRestarts restart at once; from the next one,
// wait BackoffBaseMs × 2^(n−ImmediateRestarts−1) capped at BackoffMaxMs; after MaxRestarts stop;
// a crash after more than ResetAfterMs RUNNING resets the count.
type RestartPolicy struct {
	ImmediateRestarts int32 `json:"immediate_restarts,omitempty"`
	BackoffBaseMs     int64 `json:"backoff_base_ms,omitempty"`
	BackoffMaxMs      int64 `json:"backoff_max_ms,omitempty"`
	MaxRestarts       int32 `json:"max_restarts,omitempty"`
	ResetAfterMs      int64 `json:"reset_after_ms,omitempty"`
}

// DesiredLRP is a long-running process the operator wants running Instances times.
// Updatable in place: Instances, Routes, Annotation, RestartPolicy (see DesiredLRPUpdate).
type DesiredLRP struct {
	ProcessGuid string `json:"process_guid"`
	Domain      string `json:"domain"`
	RootFS      string `json:"rootfs"`
	// ImageUsername and ImagePassword authenticate the pull of a docker:// or oci:// RootFS
	// from a private registry. The BBS never returns ImagePassword to the operator or the
	// brain (see RedactSecrets); only the cell the work is placed on reads it.
	ImageUsername   string                `json:"image_username,omitempty"`
	ImagePassword   string                `json:"image_password,omitempty"`
	Instances       int32                 `json:"instances"`
	MemoryMB        int32                 `json:"memory_mb"`
	DiskMB          int32                 `json:"disk_mb"`
	CPUWeight       uint32                `json:"cpu_weight,omitempty"`
	MaxPids         int32                 `json:"max_pids,omitempty"`
	Env             []EnvironmentVariable `json:"env,omitempty"`
	Setup           *Action               `json:"setup,omitempty"`
	Action          *Action               `json:"action"`
	CheckDefinition *CheckDefinition      `json:"check_definition,omitempty"`
	StartTimeoutMs  int64                 `json:"start_timeout_ms,omitempty"`
	Ports           []uint32              `json:"ports,omitempty"`
	Routes          json.RawMessage       `json:"routes,omitempty"`
	PlacementTags   []string              `json:"placement_tags,omitempty"`
	Privileged      bool                  `json:"privileged,omitempty"`
	LogGuid         string                `json:"log_guid,omitempty"`
	Annotation      string                `json:"annotation,omitempty"`
	RestartPolicy   *RestartPolicy        `json:"restart_policy,omitempty"`
	// CreatedAt is set by the BBS (unix nanoseconds).
	CreatedAt int64 `json:"created_at,omitempty"`
	// Revision is the etcd mod revision the record was read at; the BBS sets it on reads.
	Revision int64 `json:"revision,omitempty"`
}

// DesiredLRPUpdate changes the fields of a DesiredLRP that may change in place. Nil means
// "leave as is".
type DesiredLRPUpdate struct {
	Instances     *int32          `json:"instances,omitempty"`
	Routes        json.RawMessage `json:"routes,omitempty"`
	Annotation    *string         `json:"annotation,omitempty"`
	RestartPolicy *RestartPolicy  `json:"restart_policy,omitempty"`
}

// ActualLRP states.
const (
	ActualLRPStateUnclaimed = "UNCLAIMED"
	ActualLRPStateClaimed   = "CLAIMED"
	ActualLRPStateRunning   = "RUNNING"
	ActualLRPStateCrashed   = "CRASHED"
)

// ActualLRP presences. At most one record of each presence exists per (process_guid, index).
const (
	PresenceOrdinary   = "ORDINARY"
	PresenceEvacuating = "EVACUATING"
	PresenceSuspect    = "SUSPECT"
)

// ActualLRPKey names one index of a DesiredLRP.
type ActualLRPKey struct {
	ProcessGuid string `json:"process_guid"`
	Index       int32  `json:"index"`
	Domain      string `json:"domain"`
}

// ActualLRPInstanceKey names the container that runs an index. While the record is UNCLAIMED,
// CellID (when set) is the cell the auctioneer placed it on and InstanceGuid is empty; from
// CLAIMED on, both name the running container.
type ActualLRPInstanceKey struct {
	InstanceGuid string `json:"instance_guid,omitempty"`
	CellID       string `json:"cell_id,omitempty"`
}

// ActualLRPNetInfo is where a running instance answers.
type ActualLRPNetInfo struct {
	Address         string        `json:"address,omitempty"`
	InstanceAddress string        `json:"instance_address,omitempty"`
	Ports           []PortMapping `json:"ports,omitempty"`
}

// ActualLRP is one instance of a DesiredLRP.
type ActualLRP struct {
	ActualLRPKey
	ActualLRPInstanceKey
	ActualLRPNetInfo
	State          string `json:"state"`
	Presence       string `json:"presence"`
	PlacementError string `json:"placement_error,omitempty"`
	CrashCount     int32  `json:"crash_count,omitempty"`
	CrashReason    string `json:"crash_reason,omitempty"`
	// Since is when the record entered its state (unix nanoseconds).
	Since int64 `json:"since"`
	// RunningSince is when the instance last became RUNNING (unix nanoseconds), kept across a
	// crash so the restart policy can tell how long it ran.
	RunningSince int64 `json:"running_since,omitempty"`
	// Metrics are the last container metrics the cell reported for this instance.
	Metrics  *ContainerMetrics `json:"metrics,omitempty"`
	Revision int64             `json:"revision,omitempty"`
}

// ContainerMetrics are usage figures reported by a cell for one container.
type ContainerMetrics struct {
	CPUPercent       float64 `json:"cpu_percent"`
	MemoryBytes      uint64  `json:"memory_bytes"`
	MemoryLimitBytes uint64  `json:"memory_limit_bytes,omitempty"`
	DiskBytes        uint64  `json:"disk_bytes"`
	DiskLimitBytes   uint64  `json:"disk_limit_bytes,omitempty"`
	// At is when the figures were taken (unix nanoseconds).
	At int64 `json:"at"`
}

// Task states.
const (
	TaskStatePending   = "PENDING"
	TaskStateRunning   = "RUNNING"
	TaskStateCompleted = "COMPLETED"
	TaskStateResolving = "RESOLVING"
)

// MaxTaskRejections is how many times cells may reject a task before it fails.
const MaxTaskRejections = 3

// Task is a one-off unit of work that runs at most once.
type Task struct {
	TaskGuid string `json:"task_guid"`
	Domain   string `json:"domain"`
	RootFS   string `json:"rootfs"`
	// ImageUsername and ImagePassword: as on DesiredLRP.
	ImageUsername         string                `json:"image_username,omitempty"`
	ImagePassword         string                `json:"image_password,omitempty"`
	MemoryMB              int32                 `json:"memory_mb"`
	DiskMB                int32                 `json:"disk_mb"`
	CPUWeight             uint32                `json:"cpu_weight,omitempty"`
	MaxPids               int32                 `json:"max_pids,omitempty"`
	Env                   []EnvironmentVariable `json:"env,omitempty"`
	Action                *Action               `json:"action"`
	ResultFile            string                `json:"result_file,omitempty"`
	CompletionCallbackURL string                `json:"completion_callback_url,omitempty"`
	PlacementTags         []string              `json:"placement_tags,omitempty"`
	Privileged            bool                  `json:"privileged,omitempty"`
	LogGuid               string                `json:"log_guid,omitempty"`
	Annotation            string                `json:"annotation,omitempty"`

	// Set by the system.
	State           string `json:"state"`
	CellID          string `json:"cell_id,omitempty"`
	Failed          bool   `json:"failed,omitempty"`
	FailureReason   string `json:"failure_reason,omitempty"`
	Result          string `json:"result,omitempty"`
	RejectionCount  int32  `json:"rejection_count,omitempty"`
	RejectionReason string `json:"rejection_reason,omitempty"`
	PlacementError  string `json:"placement_error,omitempty"`
	CreatedAt       int64  `json:"created_at,omitempty"`
	UpdatedAt       int64  `json:"updated_at,omitempty"`
	// FirstCompletedAt is when the task first became COMPLETED (unix nanoseconds).
	FirstCompletedAt int64 `json:"first_completed_at,omitempty"`
	Revision         int64 `json:"revision,omitempty"`
}

// CellPresence is what a cell announces with every heartbeat.
type CellPresence struct {
	CellID string `json:"cell_id"`
	Zone   string `json:"zone"`
	// Address is where the cell's agent can be reached (for logs), host:port.
	Address string `json:"address,omitempty"`
	// OS is "linux" or "windows".
	OS       string    `json:"os,omitempty"`
	Capacity Resources `json:"capacity"`
	// RootFSProviders lists what the cell can run: "preloaded:<stack>" entries and bare
	// schemes such as "docker".
	RootFSProviders       []string `json:"rootfs_providers"`
	PlacementTags         []string `json:"placement_tags,omitempty"`
	OptionalPlacementTags []string `json:"optional_placement_tags,omitempty"`
	// Draining cells take no new work.
	Draining bool `json:"draining,omitempty"`
	// Available is what is left after what the cell already runs or reserved (reported).
	Available *Resources `json:"available,omitempty"`
}

// Domain marks a set of DesiredLRPs as fresh: while fresh, the converger may retire extra
// instances and orphans of that domain.
type Domain struct {
	Name string `json:"name"`
	// ExpiresAt is when the domain stops being fresh (unix nanoseconds); 0 means never.
	ExpiresAt int64 `json:"expires_at,omitempty"`
}
