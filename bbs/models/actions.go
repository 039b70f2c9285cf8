package models

// Action is one node of the action DSL. Exactly one field is set.
type Action struct {
	Download     *DownloadAction     `json:"download,omitempty"`
	Upload       *UploadAction       `json:"upload,omitempty"`
	Run          *RunAction          `json:"run,omitempty"`
	Timeout      *TimeoutAction      `json:"timeout,omitempty"`
	Try          *TryAction          `json:"try,omitempty"`
	Parallel     *ParallelAction     `json:"parallel,omitempty"`
	Serial       *SerialAction       `json:"serial,omitempty"`
	EmitProgress *EmitProgressAction `json:"emit_progress,omitempty"`
	Codependent  *CodependentAction  `json:"codependent,omitempty"`
}

// DownloadAction fetches From (a URL; a .tgz or .tar.gz is unpacked) into To inside the
// container. With CacheKey the artifact is cached on the cell; with ChecksumValue it is verified.
type DownloadAction struct {
	From              string `json:"from"`
	To                string `json:"to"`
	CacheKey          string `json:"cache_key,omitempty"`
	ChecksumAlgorithm string `json:"checksum_algorithm,omitempty"` // "sha256" (default) or "sha1"
	ChecksumValue     string `json:"checksum_value,omitempty"`
	User              string `json:"user,omitempty"`
}

// UploadAction streams From out of the container and PUTs it to To.
type UploadAction struct {
	From string `json:"from"`
	To   string `json:"to"`
	User string `json:"user,omitempty"`
}

// ResourceLimits are per-process limits of a RunAction.
type ResourceLimits struct {
	Nofile *uint64 `json:"nofile,omitempty"`
	Nproc  *uint64 `json:"nproc,omitempty"`
}

// RunAction runs a process in the container.
type RunAction struct {
	Path           string                `json:"path"`
	Args           []string              `json:"args,omitempty"`
	Dir            string                `json:"dir,omitempty"`
	Env            []EnvironmentVariable `json:"env,omitempty"`
	User           string                `json:"user,omitempty"`
	ResourceLimits *ResourceLimits       `json:"resource_limits,omitempty"`
	// SuppressLogOutput keeps the process's stdout/stderr out of the instance logs.
	SuppressLogOutput bool `json:"suppress_log_output,omitempty"`
}

// TimeoutAction fails if Action does not finish within TimeoutMs.
type TimeoutAction struct {
	Action    *Action `json:"action"`
	TimeoutMs int64   `json:"timeout_ms"`
}

// TryAction runs Action and ignores its failure.
type TryAction struct {
	Action *Action `json:"action"`
}

// ParallelAction runs all Actions at once and fails if any fails.
type ParallelAction struct {
	Actions []*Action `json:"actions"`
}

// SerialAction runs Actions one after another and stops at the first failure.
type SerialAction struct {
	Actions []*Action `json:"actions"`
}

// CodependentAction runs all Actions at once; when any one exits, the others are stopped.
type CodependentAction struct {
	Actions []*Action `json:"actions"`
}

// EmitProgressAction logs messages around Action.
type EmitProgressAction struct {
	Action               *Action `json:"action"`
	StartMessage         string  `json:"start_message,omitempty"`
	SuccessMessage       string  `json:"success_message,omitempty"`
	FailureMessagePrefix string  `json:"failure_message_prefix,omitempty"`
}

// CheckDefinition is the health check of an LRP. An instance is RUNNING only once a check
// passes: checks poll every IntervalMs until StartTimeoutMs of the DesiredLRP (startup), then
// keep polling as liveness checks.
type CheckDefinition struct {
	Checks []Check `json:"checks"`
	// LogSource labels health-check lines in the logs.
	LogSource string `json:"log_source,omitempty"`
}

// Check is one health check; exactly one of TCP and HTTP is set.
type Check struct {
	TCP  *TCPCheck  `json:"tcp,omitempty"`
	HTTP *HTTPCheck `json:"http,omitempty"`
}

// TCPCheck passes when a TCP connection to Port succeeds within TimeoutMs.
type TCPCheck struct {
	Port       uint32 `json:"port"`
	IntervalMs int64  `json:"interval_ms,omitempty"`
	TimeoutMs  int64  `json:"timeout_ms,omitempty"`
}

// HTTPCheck passes when GET Path on Port answers 200 within TimeoutMs.
type HTTPCheck struct {
	Port       uint32 `json:"port"`
	Path       string `json:"path,omitempty"`
	IntervalMs int64  `json:"interval_ms,omitempty"`
	TimeoutMs  int64  `json:"timeout_ms,omitempty"`
}
