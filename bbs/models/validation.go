package models

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits enforced by validation. They bound what one record may hold so that a single request
// cannot exhaust the BBS or etcd (whose default request limit is 1.5 MiB).
const (
	// MaxGuidLength bounds process_guid, task_guid, instance_guid and cell_id.
	MaxGuidLength = 128
	// MaxDomainLength bounds a domain name.
	MaxDomainLength = 128
	// MaxLogGuidLength bounds log_guid.
	MaxLogGuidLength = 128
	// MaxZoneLength bounds a cell's zone.
	MaxZoneLength = 128
	// MaxInstances bounds DesiredLRP.Instances; indices run from 0 to MaxInstances-1.
	MaxInstances = 100_000
	// MaxMemoryMB and MaxDiskMB are 1 TiB worth of megabytes.
	MaxMemoryMB = 1 << 20
	MaxDiskMB   = 1 << 20
	// MaxCPUWeight is the largest cpu_weight; 0 means the default weight.
	MaxCPUWeight = 100
	// MaxPorts bounds how many ports a DesiredLRP exposes.
	MaxPorts = 10
	// MaxRoutesBytes bounds the opaque routes document.
	MaxRoutesBytes = 128 << 10
	// MaxAnnotationBytes bounds annotation.
	MaxAnnotationBytes = 10 << 10
	// MaxActionDepth bounds how deeply actions nest (the top action is at depth 1).
	MaxActionDepth = 32
)

// fieldErr builds the *FieldError every validator returns.
func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// sub is the JSON path of name inside the object at path.
func sub(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// elem is the JSON path of element i of the array at path.
func elem(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func isGuidByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func isDomainByte(c byte) bool { return isGuidByte(c) || c == '.' }

// checkName refuses an empty v, a v longer than maxLen, or one with a byte outside ok.
func checkName(field, v string, maxLen int, ok func(byte) bool, allowed string) error {
	if v == "" {
		return fieldErr(field, "must not be empty")
	}
	if len(v) > maxLen {
		return fieldErr(field, "is %d bytes long; the limit is %d", len(v), maxLen)
	}
	for i := 0; i < len(v); i++ {
		if !ok(v[i]) {
			r, _ := utf8.DecodeRuneInString(v[i:])
			return fieldErr(field, "contains %q at byte %d; only %s are allowed", r, i, allowed)
		}
	}
	return nil
}

const (
	guidAllowed   = "letters, digits, '_' and '-'"
	domainAllowed = "letters, digits, '_', '-' and '.'"
)

// ValidateGuid checks a process_guid, task_guid or instance_guid: 1..128 bytes of
// [a-zA-Z0-9_-]. The error is a *FieldError naming field.
func ValidateGuid(field, guid string) error {
	return checkName(field, guid, MaxGuidLength, isGuidByte, guidAllowed)
}

// ValidateDomainName checks a domain: 1..128 bytes of [a-zA-Z0-9_.-].
func ValidateDomainName(field, domain string) error {
	return checkName(field, domain, MaxDomainLength, isDomainByte, domainAllowed)
}

// ValidateCellID checks a cell id: 1..128 bytes of [a-zA-Z0-9_.-], so that a host name can
// serve as one.
func ValidateCellID(field, cellID string) error {
	return checkName(field, cellID, MaxGuidLength, isDomainByte, domainAllowed)
}

func checkRange(field string, v, lo, hi int64, unit string) error {
	if v < lo || v > hi {
		if lo == 0 && v < 0 {
			return fieldErr(field, "must not be negative, got %d", v)
		}
		return fieldErr(field, "must be between %d and %d%s, got %d", lo, hi, unit, v)
	}
	return nil
}

func checkNonNegative(field string, v int64) error {
	if v < 0 {
		return fieldErr(field, "must not be negative, got %d", v)
	}
	return nil
}

func checkMaxBytes(field string, n, limit int, human string) error {
	if n > limit {
		return fieldErr(field, "is %d bytes long; the limit is %d (%s)", n, limit, human)
	}
	return nil
}

func checkNoNUL(field, v string) error {
	if i := strings.IndexByte(v, 0); i >= 0 {
		return fieldErr(field, "contains a NUL byte at byte %d", i)
	}
	return nil
}

func checkEnv(path string, env []EnvironmentVariable) error {
	for i, e := range env {
		p := elem(path, i)
		if e.Name == "" {
			return fieldErr(sub(p, "name"), "must not be empty")
		}
		if j := strings.IndexByte(e.Name, '='); j >= 0 {
			return fieldErr(sub(p, "name"), "contains '=' at byte %d; an environment variable name cannot", j)
		}
		if err := checkNoNUL(sub(p, "name"), e.Name); err != nil {
			return err
		}
		if err := checkNoNUL(sub(p, "value"), e.Value); err != nil {
			return err
		}
	}
	return nil
}

func checkTags(path string, tags []string) error {
	seen := make(map[string]int, len(tags))
	for i, t := range tags {
		if t == "" {
			return fieldErr(elem(path, i), "must not be empty")
		}
		if j, dup := seen[t]; dup {
			return fieldErr(elem(path, i), "repeats %q of %s", t, elem(path, j))
		}
		seen[t] = i
	}
	return nil
}

func checkRoutes(field string, routes json.RawMessage) error {
	if len(routes) == 0 {
		return nil
	}
	if err := checkMaxBytes(field, len(routes), MaxRoutesBytes, "128 KiB"); err != nil {
		return err
	}
	if !json.Valid(routes) {
		return fieldErr(field, "must be valid JSON")
	}
	return nil
}

func checkPort(field string, port uint32) error {
	if port < 1 || port > 65535 {
		return fieldErr(field, "must be between 1 and 65535, got %d", port)
	}
	return nil
}

// checkHTTPURL refuses anything but an absolute http or https URL with a host.
func checkHTTPURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fieldErr(field, "is not a URL: %v", unwrapURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fieldErr(field, "must be an http or https URL, got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return fieldErr(field, "must name a host")
	}
	return nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// isAbsPath accepts a POSIX absolute path or a Windows one with a drive letter, since the same
// record may run on a Linux or a Windows cell.
func isAbsPath(p string) bool {
	if strings.HasPrefix(p, "/") {
		return true
	}
	if len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') {
		c := p[0] | 0x20
		return c >= 'a' && c <= 'z'
	}
	return false
}

// checkResources checks what DesiredLRP and Task share.
func checkResources(memoryMB, diskMB int32, cpuWeight uint32, maxPids int32) error {
	if err := checkRange("memory_mb", int64(memoryMB), 0, MaxMemoryMB, " (1 TiB)"); err != nil {
		return err
	}
	if err := checkRange("disk_mb", int64(diskMB), 0, MaxDiskMB, " (1 TiB)"); err != nil {
		return err
	}
	if cpuWeight > MaxCPUWeight {
		return fieldErr("cpu_weight", "must be between 0 (default) and %d, got %d", MaxCPUWeight, cpuWeight)
	}
	return checkNonNegative("max_pids", int64(maxPids))
}

func checkLogGuidAndAnnotation(logGuid, annotation string) error {
	if len(logGuid) > MaxLogGuidLength {
		return fieldErr("log_guid", "is %d bytes long; the limit is %d", len(logGuid), MaxLogGuidLength)
	}
	return checkMaxBytes("annotation", len(annotation), MaxAnnotationBytes, "10 KiB")
}

// Validate checks a DesiredLRP as the operator submits it. It returns nil or a *FieldError
// (wrapping ErrInvalidRecord) naming the first offending field by its JSON path.
func (d *DesiredLRP) Validate() error {
	if d == nil {
		return fieldErr("body", "a desired LRP is required")
	}
	if err := ValidateGuid("process_guid", d.ProcessGuid); err != nil {
		return err
	}
	if err := ValidateDomainName("domain", d.Domain); err != nil {
		return err
	}
	if _, _, err := ParseRootFS(d.RootFS); err != nil {
		return err
	}
	if err := checkImageCredentials(d.RootFS, d.ImageUsername, d.ImagePassword); err != nil {
		return err
	}
	image := IsImageRootFS(d.RootFS)
	if err := checkRange("instances", int64(d.Instances), 0, MaxInstances, ""); err != nil {
		return err
	}
	if err := checkResources(d.MemoryMB, d.DiskMB, d.CPUWeight, d.MaxPids); err != nil {
		return err
	}
	if err := checkEnv("env", d.Env); err != nil {
		return err
	}
	if d.Setup != nil {
		if err := d.Setup.validate("setup", 1, image); err != nil {
			return err
		}
	}
	if d.Action == nil {
		return fieldErr("action", "is required")
	}
	if err := d.Action.validate("action", 1, image); err != nil {
		return err
	}
	if d.CheckDefinition != nil {
		if err := d.CheckDefinition.validate("check_definition"); err != nil {
			return err
		}
	}
	if err := checkNonNegative("start_timeout_ms", d.StartTimeoutMs); err != nil {
		return err
	}
	if len(d.Ports) > MaxPorts {
		return fieldErr("ports", "lists %d ports; the limit is %d", len(d.Ports), MaxPorts)
	}
	for i, p := range d.Ports {
		if err := checkPort(elem("ports", i), p); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if d.Ports[j] == p {
				return fieldErr(elem("ports", i), "repeats port %d of %s", p, elem("ports", j))
			}
		}
	}
	if err := checkRoutes("routes", d.Routes); err != nil {
		return err
	}
	if err := checkTags("placement_tags", d.PlacementTags); err != nil {
		return err
	}
	if err := checkLogGuidAndAnnotation(d.LogGuid, d.Annotation); err != nil {
		return err
	}
	if d.RestartPolicy != nil {
		if err := d.RestartPolicy.validate("restart_policy"); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks an in-place update of a DesiredLRP. Nil fields are not checked (they leave
// the record as is); an update that sets nothing is valid and changes nothing.
func (u *DesiredLRPUpdate) Validate() error {
	if u == nil {
		return fieldErr("body", "an update is required")
	}
	if u.Instances != nil {
		if err := checkRange("instances", int64(*u.Instances), 0, MaxInstances, ""); err != nil {
			return err
		}
	}
	if err := checkRoutes("routes", u.Routes); err != nil {
		return err
	}
	if u.Annotation != nil {
		if err := checkMaxBytes("annotation", len(*u.Annotation), MaxAnnotationBytes, "10 KiB"); err != nil {
			return err
		}
	}
	if u.RestartPolicy != nil {
		if err := u.RestartPolicy.validate("restart_policy"); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a Task as the operator submits it, and the system fields of a stored one:
// state, when set, must be a known task state and rejection_count must not be negative.
func (t *Task) Validate() error {
	if t == nil {
		return fieldErr("body", "a task is required")
	}
	if err := ValidateGuid("task_guid", t.TaskGuid); err != nil {
		return err
	}
	if err := ValidateDomainName("domain", t.Domain); err != nil {
		return err
	}
	if _, _, err := ParseRootFS(t.RootFS); err != nil {
		return err
	}
	if err := checkImageCredentials(t.RootFS, t.ImageUsername, t.ImagePassword); err != nil {
		return err
	}
	if err := checkResources(t.MemoryMB, t.DiskMB, t.CPUWeight, t.MaxPids); err != nil {
		return err
	}
	if err := checkEnv("env", t.Env); err != nil {
		return err
	}
	if t.Action == nil {
		return fieldErr("action", "is required")
	}
	if err := t.Action.validate("action", 1, IsImageRootFS(t.RootFS)); err != nil {
		return err
	}
	if t.ResultFile != "" {
		if !isAbsPath(t.ResultFile) {
			return fieldErr("result_file", "must be an absolute path, got %q", t.ResultFile)
		}
		if err := checkNoNUL("result_file", t.ResultFile); err != nil {
			return err
		}
	}
	if t.CompletionCallbackURL != "" {
		if err := checkHTTPURL("completion_callback_url", t.CompletionCallbackURL); err != nil {
			return err
		}
	}
	if err := checkTags("placement_tags", t.PlacementTags); err != nil {
		return err
	}
	if err := checkLogGuidAndAnnotation(t.LogGuid, t.Annotation); err != nil {
		return err
	}
	if t.State != "" && !isTaskState(t.State) {
		return fieldErr("state", "unknown task state %q (want PENDING, RUNNING, COMPLETED or RESOLVING)", t.State)
	}
	if t.CellID != "" {
		if err := ValidateCellID("cell_id", t.CellID); err != nil {
			return err
		}
	}
	return checkNonNegative("rejection_count", int64(t.RejectionCount))
}

// Validate checks a cell's presence: cell_id like a guid (dots allowed), a non-empty zone,
// non-negative capacity, at least one rootfs provider, each "preloaded:<stack>" or a bare
// scheme ("docker", "oci"), and placement tags without empties or repeats.
func (c *CellPresence) Validate() error {
	if c == nil {
		return fieldErr("body", "a cell presence is required")
	}
	if err := ValidateCellID("cell_id", c.CellID); err != nil {
		return err
	}
	if c.Zone == "" {
		return fieldErr("zone", "must not be empty")
	}
	if len(c.Zone) > MaxZoneLength {
		return fieldErr("zone", "is %d bytes long; the limit is %d", len(c.Zone), MaxZoneLength)
	}
	if c.Address != "" {
		host, port, err := net.SplitHostPort(c.Address)
		if err != nil {
			return fieldErr("address", "must be host:port: %v", err)
		}
		if host == "" {
			return fieldErr("address", "must name a host, got %q", c.Address)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fieldErr("address", "port %q must be a number between 1 and 65535", port)
		}
	}
	switch c.OS {
	case "", "linux", "windows":
	default:
		return fieldErr("os", "must be linux or windows, got %q", c.OS)
	}
	if err := checkCapacity("capacity", c.Capacity); err != nil {
		return err
	}
	if c.Available != nil {
		if err := checkCapacity("available", *c.Available); err != nil {
			return err
		}
	}
	if len(c.RootFSProviders) == 0 {
		return fieldErr("rootfs_providers", "must list at least one provider, such as \"preloaded:<stack>\" or \"docker\"")
	}
	for i, p := range c.RootFSProviders {
		if err := ValidateRootFSProvider(elem("rootfs_providers", i), p); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if c.RootFSProviders[j] == p {
				return fieldErr(elem("rootfs_providers", i), "repeats %q of %s", p, elem("rootfs_providers", j))
			}
		}
	}
	if err := checkTags("placement_tags", c.PlacementTags); err != nil {
		return err
	}
	return checkTags("optional_placement_tags", c.OptionalPlacementTags)
}

func checkCapacity(path string, r Resources) error {
	if err := checkNonNegative(sub(path, "memory_mb"), int64(r.MemoryMB)); err != nil {
		return err
	}
	if err := checkNonNegative(sub(path, "disk_mb"), int64(r.DiskMB)); err != nil {
		return err
	}
	return checkNonNegative(sub(path, "containers"), int64(r.Containers))
}

// Validate checks a domain: a name of 1..128 bytes of [a-zA-Z0-9_.-] and a non-negative
// expiry.
func (d *Domain) Validate() error {
	if d == nil {
		return fieldErr("body", "a domain is required")
	}
	if err := ValidateDomainName("name", d.Name); err != nil {
		return err
	}
	return checkNonNegative("expires_at", d.ExpiresAt)
}

// Validate checks the key of an instance: a valid process_guid and domain and an index in
// 0..MaxInstances-1.
func (k *ActualLRPKey) Validate() error {
	if k == nil {
		return fieldErr("body", "an actual LRP key is required")
	}
	if err := ValidateGuid("process_guid", k.ProcessGuid); err != nil {
		return err
	}
	if err := checkRange("index", int64(k.Index), 0, MaxInstances-1, ""); err != nil {
		return err
	}
	return ValidateDomainName("domain", k.Domain)
}

// Validate checks an instance key as a cell presents it to claim, start, crash or remove an
// instance: both instance_guid and cell_id are required, since together they name a container.
// (An UNCLAIMED record may carry a cell_id alone; (*ActualLRP).ValidateState covers that.)
func (k *ActualLRPInstanceKey) Validate() error {
	if k == nil {
		return fieldErr("body", "an instance key is required")
	}
	if err := ValidateGuid("instance_guid", k.InstanceGuid); err != nil {
		return err
	}
	return ValidateCellID("cell_id", k.CellID)
}

// Validate checks a whole ActualLRP record: its key, the form of its instance key fields, and
// the invariants of its state (ValidateState).
func (a *ActualLRP) Validate() error {
	if a == nil {
		return fieldErr("body", "an actual LRP is required")
	}
	if err := a.ActualLRPKey.Validate(); err != nil {
		return err
	}
	if a.InstanceGuid != "" {
		if err := ValidateGuid("instance_guid", a.InstanceGuid); err != nil {
			return err
		}
	}
	if a.CellID != "" {
		if err := ValidateCellID("cell_id", a.CellID); err != nil {
			return err
		}
	}
	return a.ValidateState()
}

// actionKinds lists the JSON names of the fields set on a.
func (a *Action) actionKinds() []string {
	var kinds []string
	add := func(set bool, name string) {
		if set {
			kinds = append(kinds, name)
		}
	}
	add(a.Download != nil, "download")
	add(a.Upload != nil, "upload")
	add(a.Run != nil, "run")
	add(a.Timeout != nil, "timeout")
	add(a.Try != nil, "try")
	add(a.Parallel != nil, "parallel")
	add(a.Serial != nil, "serial")
	add(a.EmitProgress != nil, "emit_progress")
	add(a.Codependent != nil, "codependent")
	return kinds
}

// Validate checks an action tree: every node sets exactly one action type, nesting is at most
// MaxActionDepth deep, and each action has its required fields. Field paths start at
// "action", e.g. "action.serial.actions[1].run.path". A run action needs a path; the
// Validate of a DesiredLRP or Task with a docker:// or oci:// rootfs lets it be empty, meaning
// the image's entrypoint and command.
func (a *Action) Validate() error { return a.validate("action", 1, false) }

// validate checks the tree at path; image allows run actions without a path.
func (a *Action) validate(path string, depth int, image bool) error {
	if a == nil {
		return fieldErr(path, "must not be null")
	}
	if depth > MaxActionDepth {
		return fieldErr(path, "actions are nested more than %d deep", MaxActionDepth)
	}
	kinds := a.actionKinds()
	switch len(kinds) {
	case 0:
		return fieldErr(path, "must set one action type: download, upload, run, timeout, try, parallel, serial, emit_progress or codependent")
	case 1:
	default:
		return fieldErr(path, "sets %s; an action sets exactly one type", strings.Join(kinds, " and "))
	}
	switch {
	case a.Download != nil:
		return a.Download.validate(sub(path, "download"))
	case a.Upload != nil:
		return a.Upload.validate(sub(path, "upload"))
	case a.Run != nil:
		return a.Run.validate(sub(path, "run"), image)
	case a.Timeout != nil:
		p := sub(path, "timeout")
		if a.Timeout.TimeoutMs <= 0 {
			return fieldErr(sub(p, "timeout_ms"), "must be positive, got %d", a.Timeout.TimeoutMs)
		}
		return validateChild(sub(p, "action"), a.Timeout.Action, depth, image)
	case a.Try != nil:
		return validateChild(sub(sub(path, "try"), "action"), a.Try.Action, depth, image)
	case a.EmitProgress != nil:
		return validateChild(sub(sub(path, "emit_progress"), "action"), a.EmitProgress.Action, depth, image)
	case a.Parallel != nil:
		return validateChildren(sub(path, "parallel"), a.Parallel.Actions, depth, image)
	case a.Serial != nil:
		return validateChildren(sub(path, "serial"), a.Serial.Actions, depth, image)
	default:
		return validateChildren(sub(path, "codependent"), a.Codependent.Actions, depth, image)
	}
}

func validateChild(path string, child *Action, depth int, image bool) error {
	if child == nil {
		return fieldErr(path, "is required")
	}
	return child.validate(path, depth+1, image)
}

func validateChildren(path string, children []*Action, depth int, image bool) error {
	p := sub(path, "actions")
	if len(children) == 0 {
		return fieldErr(p, "must list at least one action")
	}
	for i, c := range children {
		if err := c.validate(elem(p, i), depth+1, image); err != nil {
			return err
		}
	}
	return nil
}

func (d *DownloadAction) validate(path string) error {
	if d.From == "" {
		return fieldErr(sub(path, "from"), "is required")
	}
	if err := checkHTTPURL(sub(path, "from"), d.From); err != nil {
		return err
	}
	if d.To == "" {
		return fieldErr(sub(path, "to"), "is required")
	}
	if err := checkNoNUL(sub(path, "to"), d.To); err != nil {
		return err
	}
	var hexLen int
	switch d.ChecksumAlgorithm {
	case "", "sha256":
		hexLen = 64
	case "sha1":
		hexLen = 40
	default:
		return fieldErr(sub(path, "checksum_algorithm"), "must be sha256 or sha1, got %q", d.ChecksumAlgorithm)
	}
	if d.ChecksumValue == "" {
		if d.ChecksumAlgorithm != "" {
			return fieldErr(sub(path, "checksum_value"), "is required when checksum_algorithm is set")
		}
		return nil
	}
	if len(d.ChecksumValue) != hexLen || !isHex(d.ChecksumValue) {
		return fieldErr(sub(path, "checksum_value"), "must be %d hex digits", hexLen)
	}
	return nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (u *UploadAction) validate(path string) error {
	if u.From == "" {
		return fieldErr(sub(path, "from"), "is required")
	}
	if err := checkNoNUL(sub(path, "from"), u.From); err != nil {
		return err
	}
	if u.To == "" {
		return fieldErr(sub(path, "to"), "is required")
	}
	return checkHTTPURL(sub(path, "to"), u.To)
}

func (r *RunAction) validate(path string, image bool) error {
	if r.Path == "" && !image {
		return fieldErr(sub(path, "path"), "is required (only a docker:// or oci:// rootfs may leave it empty, to run the image's command)")
	}
	if err := checkNoNUL(sub(path, "path"), r.Path); err != nil {
		return err
	}
	for i, a := range r.Args {
		if err := checkNoNUL(elem(sub(path, "args"), i), a); err != nil {
			return err
		}
	}
	if err := checkNoNUL(sub(path, "dir"), r.Dir); err != nil {
		return err
	}
	return checkEnv(sub(path, "env"), r.Env)
}

// Validate checks a health-check definition: at least one check, each setting exactly one of
// tcp and http, a port in 1..65535, non-negative intervals and timeouts, and an HTTP path that
// starts with '/'. Field paths start at "check_definition".
func (c *CheckDefinition) Validate() error { return c.validate("check_definition") }

func (c *CheckDefinition) validate(path string) error {
	if c == nil {
		return fieldErr(path, "must not be null")
	}
	p := sub(path, "checks")
	if len(c.Checks) == 0 {
		return fieldErr(p, "must list at least one check (omit check_definition for none)")
	}
	for i, chk := range c.Checks {
		cp := elem(p, i)
		switch {
		case chk.TCP != nil && chk.HTTP != nil:
			return fieldErr(cp, "sets tcp and http; a check sets exactly one")
		case chk.TCP != nil:
			if err := checkProbe(sub(cp, "tcp"), chk.TCP.Port, chk.TCP.IntervalMs, chk.TCP.TimeoutMs); err != nil {
				return err
			}
		case chk.HTTP != nil:
			hp := sub(cp, "http")
			if err := checkProbe(hp, chk.HTTP.Port, chk.HTTP.IntervalMs, chk.HTTP.TimeoutMs); err != nil {
				return err
			}
			if chk.HTTP.Path != "" && !strings.HasPrefix(chk.HTTP.Path, "/") {
				return fieldErr(sub(hp, "path"), "must start with '/', got %q", chk.HTTP.Path)
			}
		default:
			return fieldErr(cp, "must set tcp or http")
		}
	}
	return nil
}

func checkProbe(path string, port uint32, intervalMs, timeoutMs int64) error {
	if err := checkPort(sub(path, "port"), port); err != nil {
		return err
	}
	if err := checkNonNegative(sub(path, "interval_ms"), intervalMs); err != nil {
		return err
	}
	return checkNonNegative(sub(path, "timeout_ms"), timeoutMs)
}

// Validate checks a restart policy: no negative field, and (after zero fields take their
// defaults) backoff_max_ms not below backoff_base_ms. Field paths start at "restart_policy".
func (p *RestartPolicy) Validate() error { return p.validate("restart_policy") }

func (p *RestartPolicy) validate(path string) error {
	if p == nil {
		return fieldErr(path, "must not be null")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"immediate_restarts", int64(p.ImmediateRestarts)},
		{"backoff_base_ms", p.BackoffBaseMs},
		{"backoff_max_ms", p.BackoffMaxMs},
		{"max_restarts", int64(p.MaxRestarts)},
		{"reset_after_ms", p.ResetAfterMs},
	} {
		if err := checkNonNegative(sub(path, f.name), f.v); err != nil {
			return err
		}
	}
	eff := p.WithDefaults()
	if eff.BackoffMaxMs < eff.BackoffBaseMs {
		return fieldErr(sub(path, "backoff_max_ms"), "is %d, below backoff_base_ms %d (zero fields take their defaults)", eff.BackoffMaxMs, eff.BackoffBaseMs)
	}
	return nil
}
