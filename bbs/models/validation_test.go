package models

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func i32(v int32) *int32   { return &v }
func str(v string) *string { return &v }

// validLRP returns a DesiredLRP that uses most fields and passes validation.
func validLRP() *DesiredLRP {
	return &DesiredLRP{
		ProcessGuid: "web-app_1",
		Domain:      "cf-apps",
		RootFS:      "preloaded:cflinuxfs4",
		Instances:   3,
		MemoryMB:    256,
		DiskMB:      1024,
		CPUWeight:   50,
		MaxPids:     1024,
		Env:         []EnvironmentVariable{{Name: "PORT", Value: "8080"}},
		Setup: &Action{Download: &DownloadAction{
			From: "https://blobs.example.com/droplet.tgz", To: "/home/vcap", CacheKey: "droplet",
			ChecksumValue: strings.Repeat("ab", 32),
		}},
		Action: &Action{Codependent: &CodependentAction{Actions: []*Action{
			{Run: &RunAction{Path: "/home/vcap/app/start", Args: []string{"--port", "8080"}}},
			{Run: &RunAction{Path: "/usr/bin/sshd"}},
		}}},
		CheckDefinition: &CheckDefinition{Checks: []Check{
			{HTTP: &HTTPCheck{Port: 8080, Path: "/healthz", IntervalMs: 1000}},
			{TCP: &TCPCheck{Port: 2222}},
		}},
		StartTimeoutMs: 60_000,
		Ports:          []uint32{8080, 2222},
		Routes:         json.RawMessage(`{"http":[{"hostname":"app.example.com","port":8080}]}`),
		PlacementTags:  []string{"gpu", "ssd"},
		LogGuid:        "log-guid-1",
		Annotation:     "built by pipeline 42",
		RestartPolicy:  &RestartPolicy{ImmediateRestarts: 3, BackoffBaseMs: 1000},
	}
}

func validTask() *Task {
	return &Task{
		TaskGuid: "stage-1",
		Domain:   "cf-tasks",
		RootFS:   "docker:///cloudfoundry/cflinuxfs4:latest",
		MemoryMB: 512,
		DiskMB:   2048,
		Action: &Action{Serial: &SerialAction{Actions: []*Action{
			{Download: &DownloadAction{From: "http://blobs.example.com/app.zip", To: "/tmp/app"}},
			{Run: &RunAction{Path: "/tmp/lifecycle/builder", Env: []EnvironmentVariable{{Name: "A", Value: "b=c"}}}},
			{Upload: &UploadAction{From: "/tmp/droplet", To: "https://cc.example.com/droplets/1"}},
		}}},
		ResultFile:            "/tmp/result.json",
		CompletionCallbackURL: "https://cc.example.com/tasks/stage-1/completed",
		PlacementTags:         []string{"builder"},
	}
}

// The issue's examples of bad input each get an error naming the field.
func TestIssueExamples(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(d *DesiredLRP)
		field  string
		reason string
	}{
		{"negative instances", func(d *DesiredLRP) { d.Instances = -1 }, "instances", "must not be negative, got -1"},
		{"memory_mb of -1", func(d *DesiredLRP) { d.MemoryMB = -1 }, "memory_mb", "must not be negative, got -1"},
		{"unknown rootfs scheme", func(d *DesiredLRP) { d.RootFS = "ftp://images/x" }, "rootfs", `unknown rootfs scheme "ftp" (want preloaded, docker or oci)`},
		{"5 MiB annotation", func(d *DesiredLRP) { d.Annotation = strings.Repeat("a", 5<<20) }, "annotation", "the limit is 10240 (10 KiB)"},
		{"process_guid with spaces", func(d *DesiredLRP) { d.ProcessGuid = "my app" }, "process_guid", `contains ' ' at byte 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validLRP()
			tt.mutate(d)
			err := d.Validate()
			assertField(t, err, tt.field)
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q does not say %q", err, tt.reason)
			}
		})
	}
	t.Run("malformed JSON", func(t *testing.T) {
		var d DesiredLRP
		err := DecodeStrict(strings.NewReader(`{"process_guid": "a",, }`), &d)
		assertField(t, err, "body")
		if !strings.Contains(err.Error(), "at byte 22") {
			t.Fatalf("error %q does not give the offset", err)
		}
	})
}

func TestValidFixtures(t *testing.T) {
	if err := validLRP().Validate(); err != nil {
		t.Fatalf("desired LRP: %v", err)
	}
	if err := validTask().Validate(); err != nil {
		t.Fatalf("task: %v", err)
	}
}

func TestValidateNilRecords(t *testing.T) {
	checks := map[string]error{
		"desired lrp":   (*DesiredLRP)(nil).Validate(),
		"update":        (*DesiredLRPUpdate)(nil).Validate(),
		"task":          (*Task)(nil).Validate(),
		"cell":          (*CellPresence)(nil).Validate(),
		"domain":        (*Domain)(nil).Validate(),
		"key":           (*ActualLRPKey)(nil).Validate(),
		"instance key":  (*ActualLRPInstanceKey)(nil).Validate(),
		"actual lrp":    (*ActualLRP)(nil).Validate(),
		"actual state":  (*ActualLRP)(nil).ValidateState(),
		"action":        (*Action)(nil).Validate(),
		"check def":     (*CheckDefinition)(nil).Validate(),
		"restart polcy": (*RestartPolicy)(nil).Validate(),
	}
	for name, err := range checks {
		if !IsInvalidRecord(err) {
			t.Errorf("%s: nil record gave %v, want InvalidRecord", name, err)
		}
	}
}

func TestDesiredLRPValidate(t *testing.T) {
	deep := &Action{Run: &RunAction{Path: "/bin/true"}}
	for i := 1; i < MaxActionDepth; i++ {
		deep = &Action{Try: &TryAction{Action: deep}}
	}
	tests := []struct {
		name   string
		mutate func(d *DesiredLRP)
		field  string // "" = valid
	}{
		{"valid", func(d *DesiredLRP) {}, ""},
		{"minimal", func(d *DesiredLRP) {
			*d = DesiredLRP{ProcessGuid: "p", Domain: "d", RootFS: "docker:///busybox", Action: &Action{Run: &RunAction{Path: "sh"}}}
		}, ""},
		{"empty process_guid", func(d *DesiredLRP) { d.ProcessGuid = "" }, "process_guid"},
		{"process_guid of 128 bytes", func(d *DesiredLRP) { d.ProcessGuid = strings.Repeat("a", 128) }, ""},
		{"process_guid of 129 bytes", func(d *DesiredLRP) { d.ProcessGuid = strings.Repeat("a", 129) }, "process_guid"},
		{"process_guid with a dot", func(d *DesiredLRP) { d.ProcessGuid = "a.b" }, "process_guid"},
		{"process_guid with a slash", func(d *DesiredLRP) { d.ProcessGuid = "a/b" }, "process_guid"},
		{"process_guid with unicode", func(d *DesiredLRP) { d.ProcessGuid = "caf\u00e9" }, "process_guid"},
		{"empty domain", func(d *DesiredLRP) { d.Domain = "" }, "domain"},
		{"domain with dots", func(d *DesiredLRP) { d.Domain = "cf.apps-1_x" }, ""},
		{"domain with space", func(d *DesiredLRP) { d.Domain = "cf apps" }, "domain"},
		{"domain of 129 bytes", func(d *DesiredLRP) { d.Domain = strings.Repeat("d", 129) }, "domain"},
		{"empty rootfs", func(d *DesiredLRP) { d.RootFS = "" }, "rootfs"},
		{"rootfs without scheme", func(d *DesiredLRP) { d.RootFS = "cflinuxfs4" }, "rootfs"},
		{"rootfs bad stack", func(d *DesiredLRP) { d.RootFS = "preloaded:" }, "rootfs"},
		{"rootfs docker", func(d *DesiredLRP) {
			d.RootFS = "docker://registry.example.com:5000/team/app@sha256:" + strings.Repeat("0", 64)
		}, ""},
		{"rootfs oci", func(d *DesiredLRP) { d.RootFS = "oci:///library/alpine:3.20" }, ""},
		{"instances 0", func(d *DesiredLRP) { d.Instances = 0 }, ""},
		{"instances at limit", func(d *DesiredLRP) { d.Instances = MaxInstances }, ""},
		{"instances over limit", func(d *DesiredLRP) { d.Instances = MaxInstances + 1 }, "instances"},
		{"memory at 1 TiB", func(d *DesiredLRP) { d.MemoryMB = MaxMemoryMB }, ""},
		{"memory over 1 TiB", func(d *DesiredLRP) { d.MemoryMB = MaxMemoryMB + 1 }, "memory_mb"},
		{"negative disk", func(d *DesiredLRP) { d.DiskMB = -5 }, "disk_mb"},
		{"disk over 1 TiB", func(d *DesiredLRP) { d.DiskMB = MaxDiskMB + 1 }, "disk_mb"},
		{"cpu_weight default", func(d *DesiredLRP) { d.CPUWeight = 0 }, ""},
		{"cpu_weight 100", func(d *DesiredLRP) { d.CPUWeight = 100 }, ""},
		{"cpu_weight 101", func(d *DesiredLRP) { d.CPUWeight = 101 }, "cpu_weight"},
		{"negative max_pids", func(d *DesiredLRP) { d.MaxPids = -1 }, "max_pids"},
		{"negative start timeout", func(d *DesiredLRP) { d.StartTimeoutMs = -1 }, "start_timeout_ms"},
		{"env empty name", func(d *DesiredLRP) { d.Env = append(d.Env, EnvironmentVariable{Value: "x"}) }, "env[1].name"},
		{"env name with =", func(d *DesiredLRP) { d.Env = []EnvironmentVariable{{Name: "A=B"}} }, "env[0].name"},
		{"env value with NUL", func(d *DesiredLRP) { d.Env = []EnvironmentVariable{{Name: "A", Value: "x\x00"}} }, "env[0].value"},
		{"env value with =", func(d *DesiredLRP) { d.Env = []EnvironmentVariable{{Name: "A", Value: "x=y"}} }, ""},
		{"no action", func(d *DesiredLRP) { d.Action = nil }, "action"},
		{"empty action", func(d *DesiredLRP) { d.Action = &Action{} }, "action"},
		{"bad setup", func(d *DesiredLRP) { d.Setup = &Action{Run: &RunAction{}} }, "setup.run.path"},
		{"deep action at limit", func(d *DesiredLRP) { d.Action = deep }, ""},
		{"deep action over limit", func(d *DesiredLRP) { d.Action = &Action{Try: &TryAction{Action: deep}} }, "action" + strings.Repeat(".try.action", MaxActionDepth)},
		{"bad check", func(d *DesiredLRP) { d.CheckDefinition.Checks[1].TCP.Port = 0 }, "check_definition.checks[1].tcp.port"},
		{"no ports", func(d *DesiredLRP) { d.Ports = nil }, ""},
		{"ten ports", func(d *DesiredLRP) { d.Ports = []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} }, ""},
		{"eleven ports", func(d *DesiredLRP) { d.Ports = []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11} }, "ports"},
		{"port 0", func(d *DesiredLRP) { d.Ports = []uint32{8080, 0} }, "ports[1]"},
		{"port 65535", func(d *DesiredLRP) { d.Ports = []uint32{65535} }, ""},
		{"port 65536", func(d *DesiredLRP) { d.Ports = []uint32{65536} }, "ports[0]"},
		{"duplicate port", func(d *DesiredLRP) { d.Ports = []uint32{80, 443, 80} }, "ports[2]"},
		{"routes invalid JSON", func(d *DesiredLRP) { d.Routes = json.RawMessage(`{"http":`) }, "routes"},
		{"routes at 128 KiB", func(d *DesiredLRP) { d.Routes = jsonString(MaxRoutesBytes) }, ""},
		{"routes over 128 KiB", func(d *DesiredLRP) { d.Routes = jsonString(MaxRoutesBytes + 1) }, "routes"},
		{"routes null", func(d *DesiredLRP) { d.Routes = json.RawMessage(`null`) }, ""},
		{"empty placement tag", func(d *DesiredLRP) { d.PlacementTags = []string{"a", ""} }, "placement_tags[1]"},
		{"duplicate placement tag", func(d *DesiredLRP) { d.PlacementTags = []string{"a", "b", "a"} }, "placement_tags[2]"},
		{"log_guid of 128", func(d *DesiredLRP) { d.LogGuid = strings.Repeat("l", 128) }, ""},
		{"log_guid of 129", func(d *DesiredLRP) { d.LogGuid = strings.Repeat("l", 129) }, "log_guid"},
		{"annotation at 10 KiB", func(d *DesiredLRP) { d.Annotation = strings.Repeat("a", MaxAnnotationBytes) }, ""},
		{"annotation over 10 KiB", func(d *DesiredLRP) { d.Annotation = strings.Repeat("a", MaxAnnotationBytes+1) }, "annotation"},
		{"bad restart policy", func(d *DesiredLRP) { d.RestartPolicy = &RestartPolicy{MaxRestarts: -1} }, "restart_policy.max_restarts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validLRP()
			tt.mutate(d)
			assertField(t, d.Validate(), tt.field)
		})
	}
}

// jsonString returns a JSON string document of exactly n bytes.
func jsonString(n int) json.RawMessage {
	return json.RawMessage(`"` + strings.Repeat("r", n-2) + `"`)
}

func TestDesiredLRPUpdateValidate(t *testing.T) {
	tests := []struct {
		name   string
		update DesiredLRPUpdate
		field  string
	}{
		{"empty", DesiredLRPUpdate{}, ""},
		{"everything", DesiredLRPUpdate{Instances: i32(5), Routes: json.RawMessage(`{}`), Annotation: str("x"), RestartPolicy: &RestartPolicy{MaxRestarts: 5}}, ""},
		{"scale to zero", DesiredLRPUpdate{Instances: i32(0)}, ""},
		{"negative instances", DesiredLRPUpdate{Instances: i32(-1)}, "instances"},
		{"too many instances", DesiredLRPUpdate{Instances: i32(MaxInstances + 1)}, "instances"},
		{"invalid routes", DesiredLRPUpdate{Routes: json.RawMessage(`[1,`)}, "routes"},
		{"big routes", DesiredLRPUpdate{Routes: jsonString(MaxRoutesBytes + 1)}, "routes"},
		{"clear annotation", DesiredLRPUpdate{Annotation: str("")}, ""},
		{"big annotation", DesiredLRPUpdate{Annotation: str(strings.Repeat("a", MaxAnnotationBytes+1))}, "annotation"},
		{"bad restart policy", DesiredLRPUpdate{RestartPolicy: &RestartPolicy{BackoffBaseMs: -1}}, "restart_policy.backoff_base_ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertField(t, tt.update.Validate(), tt.field)
		})
	}
}

func TestTaskValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *Task)
		field  string
	}{
		{"valid", func(*Task) {}, ""},
		{"empty task_guid", func(t *Task) { t.TaskGuid = "" }, "task_guid"},
		{"task_guid with space", func(t *Task) { t.TaskGuid = "a b" }, "task_guid"},
		{"task_guid too long", func(t *Task) { t.TaskGuid = strings.Repeat("t", 129) }, "task_guid"},
		{"empty domain", func(t *Task) { t.Domain = "" }, "domain"},
		{"unknown rootfs scheme", func(t *Task) { t.RootFS = "http://x/y" }, "rootfs"},
		{"negative memory", func(t *Task) { t.MemoryMB = -1 }, "memory_mb"},
		{"negative disk", func(t *Task) { t.DiskMB = -1 }, "disk_mb"},
		{"cpu weight over 100", func(t *Task) { t.CPUWeight = 1000 }, "cpu_weight"},
		{"negative max_pids", func(t *Task) { t.MaxPids = -3 }, "max_pids"},
		{"bad env", func(t *Task) { t.Env = []EnvironmentVariable{{Name: ""}} }, "env[0].name"},
		{"no action", func(t *Task) { t.Action = nil }, "action"},
		{"bad nested action", func(t *Task) { t.RootFS = "preloaded:cflinuxfs4"; t.Action.Serial.Actions[1].Run.Path = "" }, "action.serial.actions[1].run.path"},
		{"no result file", func(t *Task) { t.ResultFile = "" }, ""},
		{"relative result file", func(t *Task) { t.ResultFile = "result.json" }, "result_file"},
		{"windows result file", func(t *Task) { t.ResultFile = `C:\Users\vcap\result.json` }, ""},
		{"windows forward slashes", func(t *Task) { t.ResultFile = "c:/result.json" }, ""},
		{"drive-relative result file", func(t *Task) { t.ResultFile = "C:result.json" }, "result_file"},
		{"result file with NUL", func(t *Task) { t.ResultFile = "/tmp/a\x00" }, "result_file"},
		{"no callback", func(t *Task) { t.CompletionCallbackURL = "" }, ""},
		{"http callback", func(t *Task) { t.CompletionCallbackURL = "http://10.0.0.1:9000/done" }, ""},
		{"ftp callback", func(t *Task) { t.CompletionCallbackURL = "ftp://cc/done" }, "completion_callback_url"},
		{"callback without host", func(t *Task) { t.CompletionCallbackURL = "https:///done" }, "completion_callback_url"},
		{"relative callback", func(t *Task) { t.CompletionCallbackURL = "/done" }, "completion_callback_url"},
		{"unparsable callback", func(t *Task) { t.CompletionCallbackURL = "http://[::1" }, "completion_callback_url"},
		{"duplicate tag", func(t *Task) { t.PlacementTags = []string{"x", "x"} }, "placement_tags[1]"},
		{"long log_guid", func(t *Task) { t.LogGuid = strings.Repeat("l", 129) }, "log_guid"},
		{"big annotation", func(t *Task) { t.Annotation = strings.Repeat("a", MaxAnnotationBytes+1) }, "annotation"},
		{"stored state", func(t *Task) { t.State = TaskStateCompleted; t.Failed = true; t.FailureReason = "x" }, ""},
		{"unknown state", func(t *Task) { t.State = "DONE" }, "state"},
		{"bad cell id", func(t *Task) { t.CellID = "cell 1" }, "cell_id"},
		{"negative rejections", func(t *Task) { t.RejectionCount = -1 }, "rejection_count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := validTask()
			tt.mutate(task)
			assertField(t, task.Validate(), tt.field)
		})
	}
}

func TestActionValidate(t *testing.T) {
	run := func() *Action { return &Action{Run: &RunAction{Path: "/bin/app"}} }
	sha1 := strings.Repeat("0a", 20)
	tests := []struct {
		name   string
		action *Action
		field  string
	}{
		{"run", run(), ""},
		{"nothing set", &Action{}, "action"},
		{"two set", &Action{Run: &RunAction{Path: "x"}, Try: &TryAction{Action: run()}}, "action"},
		{"run without path", &Action{Run: &RunAction{}}, "action.run.path"},
		{"run path with NUL", &Action{Run: &RunAction{Path: "/bin/a\x00"}}, "action.run.path"},
		{"run arg with NUL", &Action{Run: &RunAction{Path: "/bin/a", Args: []string{"ok", "b\x00"}}}, "action.run.args[1]"},
		{"run dir with NUL", &Action{Run: &RunAction{Path: "/bin/a", Dir: "\x00"}}, "action.run.dir"},
		{"run env", &Action{Run: &RunAction{Path: "/bin/a", Env: []EnvironmentVariable{{Name: "OK"}, {Name: "X=1"}}}}, "action.run.env[1].name"},
		{"download", &Action{Download: &DownloadAction{From: "https://x/y.tgz", To: "/app"}}, ""},
		{"download without from", &Action{Download: &DownloadAction{To: "/app"}}, "action.download.from"},
		{"download from file URL", &Action{Download: &DownloadAction{From: "file:///etc/passwd", To: "/app"}}, "action.download.from"},
		{"download without to", &Action{Download: &DownloadAction{From: "https://x/y"}}, "action.download.to"},
		{"download sha1", &Action{Download: &DownloadAction{From: "https://x/y", To: "/a", ChecksumAlgorithm: "sha1", ChecksumValue: sha1}}, ""},
		{"download sha1 wrong length", &Action{Download: &DownloadAction{From: "https://x/y", To: "/a", ChecksumAlgorithm: "sha1", ChecksumValue: sha1 + "00"}}, "action.download.checksum_value"},
		{"download md5", &Action{Download: &DownloadAction{From: "https://x/y", To: "/a", ChecksumAlgorithm: "md5", ChecksumValue: "00"}}, "action.download.checksum_algorithm"},
		{"download algorithm without value", &Action{Download: &DownloadAction{From: "https://x/y", To: "/a", ChecksumAlgorithm: "sha256"}}, "action.download.checksum_value"},
		{"download non-hex checksum", &Action{Download: &DownloadAction{From: "https://x/y", To: "/a", ChecksumValue: strings.Repeat("zz", 32)}}, "action.download.checksum_value"},
		{"upload", &Action{Upload: &UploadAction{From: "/out", To: "https://x/up"}}, ""},
		{"upload without from", &Action{Upload: &UploadAction{To: "https://x/up"}}, "action.upload.from"},
		{"upload without to", &Action{Upload: &UploadAction{From: "/out"}}, "action.upload.to"},
		{"upload to a path", &Action{Upload: &UploadAction{From: "/out", To: "/elsewhere"}}, "action.upload.to"},
		{"timeout", &Action{Timeout: &TimeoutAction{Action: run(), TimeoutMs: 1}}, ""},
		{"timeout of zero", &Action{Timeout: &TimeoutAction{Action: run()}}, "action.timeout.timeout_ms"},
		{"timeout without action", &Action{Timeout: &TimeoutAction{TimeoutMs: 5}}, "action.timeout.action"},
		{"timeout with bad action", &Action{Timeout: &TimeoutAction{TimeoutMs: 5, Action: &Action{}}}, "action.timeout.action"},
		{"try without action", &Action{Try: &TryAction{}}, "action.try.action"},
		{"emit progress", &Action{EmitProgress: &EmitProgressAction{Action: run(), StartMessage: "go"}}, ""},
		{"emit progress without action", &Action{EmitProgress: &EmitProgressAction{StartMessage: "go"}}, "action.emit_progress.action"},
		{"parallel empty", &Action{Parallel: &ParallelAction{}}, "action.parallel.actions"},
		{"serial null element", &Action{Serial: &SerialAction{Actions: []*Action{run(), nil}}}, "action.serial.actions[1]"},
		{"codependent bad element", &Action{Codependent: &CodependentAction{Actions: []*Action{run(), run(), {Run: &RunAction{}}}}}, "action.codependent.actions[2].run.path"},
		{"the brief's example path", &Action{Serial: &SerialAction{Actions: []*Action{run(), {Run: &RunAction{}}}}}, "action.serial.actions[1].run.path"},
		{"nested mix", &Action{Parallel: &ParallelAction{Actions: []*Action{
			{EmitProgress: &EmitProgressAction{Action: &Action{Timeout: &TimeoutAction{TimeoutMs: 10, Action: &Action{Serial: &SerialAction{Actions: []*Action{run(), {Upload: &UploadAction{From: "/x"}}}}}}}}},
		}}}, "action.parallel.actions[0].emit_progress.action.timeout.action.serial.actions[1].upload.to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertField(t, tt.action.Validate(), tt.field)
		})
	}
}

// A very deep tree is refused at the depth limit without walking the rest of it.
func TestActionDepthLimitBoundsWork(t *testing.T) {
	a := &Action{Run: &RunAction{Path: "/x"}}
	for i := 0; i < 100_000; i++ {
		a = &Action{Serial: &SerialAction{Actions: []*Action{a}}}
	}
	err := a.Validate()
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "nested more than 32 deep") {
		t.Fatalf("got %v", err)
	}
	if strings.Count(fe.Field, ".serial.actions[0]") != MaxActionDepth {
		t.Fatalf("field %q is not at depth %d", fe.Field, MaxActionDepth+1)
	}
}

func TestCheckDefinitionValidate(t *testing.T) {
	tests := []struct {
		name  string
		def   CheckDefinition
		field string
	}{
		{"tcp", CheckDefinition{Checks: []Check{{TCP: &TCPCheck{Port: 8080, IntervalMs: 500, TimeoutMs: 100}}}}, ""},
		{"http root", CheckDefinition{Checks: []Check{{HTTP: &HTTPCheck{Port: 8080}}}}, ""},
		{"no checks", CheckDefinition{}, "check_definition.checks"},
		{"empty check", CheckDefinition{Checks: []Check{{}}}, "check_definition.checks[0]"},
		{"both set", CheckDefinition{Checks: []Check{{TCP: &TCPCheck{Port: 1}, HTTP: &HTTPCheck{Port: 1}}}}, "check_definition.checks[0]"},
		{"tcp port 0", CheckDefinition{Checks: []Check{{TCP: &TCPCheck{}}}}, "check_definition.checks[0].tcp.port"},
		{"http port too big", CheckDefinition{Checks: []Check{{HTTP: &HTTPCheck{Port: 70000}}}}, "check_definition.checks[0].http.port"},
		{"negative interval", CheckDefinition{Checks: []Check{{TCP: &TCPCheck{Port: 1, IntervalMs: -1}}}}, "check_definition.checks[0].tcp.interval_ms"},
		{"negative timeout", CheckDefinition{Checks: []Check{{HTTP: &HTTPCheck{Port: 1, TimeoutMs: -1}}}}, "check_definition.checks[0].http.timeout_ms"},
		{"relative http path", CheckDefinition{Checks: []Check{{TCP: &TCPCheck{Port: 1}}, {HTTP: &HTTPCheck{Port: 1, Path: "health"}}}}, "check_definition.checks[1].http.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertField(t, tt.def.Validate(), tt.field)
		})
	}
}

func TestRestartPolicy(t *testing.T) {
	d := DefaultRestartPolicy()
	want := RestartPolicy{ImmediateRestarts: 2, BackoffBaseMs: 30_000, BackoffMaxMs: 960_000, MaxRestarts: 200, ResetAfterMs: 300_000}
	if d != want {
		t.Fatalf("DefaultRestartPolicy() = %+v, want Diego's %+v", d, want)
	}
	if got := (*RestartPolicy)(nil).WithDefaults(); got != want {
		t.Fatalf("nil.WithDefaults() = %+v", got)
	}
	if got := (&RestartPolicy{}).WithDefaults(); got != want {
		t.Fatalf("zero.WithDefaults() = %+v", got)
	}
	custom := RestartPolicy{ImmediateRestarts: 5, BackoffBaseMs: 1, BackoffMaxMs: 2, MaxRestarts: 3, ResetAfterMs: 4}
	if got := custom.WithDefaults(); got != custom {
		t.Fatalf("a full policy changed: %+v", got)
	}
	partial := RestartPolicy{MaxRestarts: 10}
	if got := partial.WithDefaults(); got.MaxRestarts != 10 || got.BackoffBaseMs != 30_000 {
		t.Fatalf("partial.WithDefaults() = %+v", got)
	}

	tests := []struct {
		name   string
		policy RestartPolicy
		field  string
	}{
		{"zero", RestartPolicy{}, ""},
		{"default", d, ""},
		{"negative immediate", RestartPolicy{ImmediateRestarts: -1}, "restart_policy.immediate_restarts"},
		{"negative base", RestartPolicy{BackoffBaseMs: -1}, "restart_policy.backoff_base_ms"},
		{"negative max", RestartPolicy{BackoffMaxMs: -1}, "restart_policy.backoff_max_ms"},
		{"negative count", RestartPolicy{MaxRestarts: -1}, "restart_policy.max_restarts"},
		{"negative reset", RestartPolicy{ResetAfterMs: -1}, "restart_policy.reset_after_ms"},
		{"max below base", RestartPolicy{BackoffBaseMs: 10_000, BackoffMaxMs: 5_000}, "restart_policy.backoff_max_ms"},
		{"base above default max", RestartPolicy{BackoffBaseMs: DefaultBackoffMaxMs + 1}, "restart_policy.backoff_max_ms"},
		{"max equal base", RestartPolicy{BackoffBaseMs: 5_000, BackoffMaxMs: 5_000}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertField(t, tt.policy.Validate(), tt.field)
		})
	}
}

func validCell() *CellPresence {
	return &CellPresence{
		CellID:                "cell-z1-0.example.com",
		Zone:                  "z1",
		Address:               "10.0.0.5:1801",
		OS:                    "linux",
		Capacity:              Resources{MemoryMB: 16384, DiskMB: 102400, Containers: 250},
		Available:             &Resources{MemoryMB: 1024, DiskMB: 0, Containers: 3},
		RootFSProviders:       []string{"preloaded:cflinuxfs4", "docker", "oci"},
		PlacementTags:         []string{"gpu"},
		OptionalPlacementTags: []string{"ssd"},
	}
}

func TestCellPresenceValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *CellPresence)
		field  string
	}{
		{"valid", func(*CellPresence) {}, ""},
		{"windows", func(c *CellPresence) { c.OS = "windows"; c.RootFSProviders = []string{"preloaded:windows2019"} }, ""},
		{"no os", func(c *CellPresence) { c.OS = "" }, ""},
		{"no address", func(c *CellPresence) { c.Address = "" }, ""},
		{"empty cell id", func(c *CellPresence) { c.CellID = "" }, "cell_id"},
		{"cell id with colon", func(c *CellPresence) { c.CellID = "cell:1" }, "cell_id"},
		{"cell id too long", func(c *CellPresence) { c.CellID = strings.Repeat("c", 129) }, "cell_id"},
		{"empty zone", func(c *CellPresence) { c.Zone = "" }, "zone"},
		{"zone too long", func(c *CellPresence) { c.Zone = strings.Repeat("z", 129) }, "zone"},
		{"address without port", func(c *CellPresence) { c.Address = "10.0.0.5" }, "address"},
		{"address without host", func(c *CellPresence) { c.Address = ":1801" }, "address"},
		{"address port 0", func(c *CellPresence) { c.Address = "cell:0" }, "address"},
		{"address named port", func(c *CellPresence) { c.Address = "cell:http" }, "address"},
		{"ipv6 address", func(c *CellPresence) { c.Address = "[fd00::5]:1801" }, ""},
		{"unknown os", func(c *CellPresence) { c.OS = "darwin" }, "os"},
		{"negative memory", func(c *CellPresence) { c.Capacity.MemoryMB = -1 }, "capacity.memory_mb"},
		{"negative disk", func(c *CellPresence) { c.Capacity.DiskMB = -1 }, "capacity.disk_mb"},
		{"negative containers", func(c *CellPresence) { c.Capacity.Containers = -1 }, "capacity.containers"},
		{"zero capacity", func(c *CellPresence) { c.Capacity = Resources{} }, ""},
		{"negative available", func(c *CellPresence) { c.Available.Containers = -2 }, "available.containers"},
		{"no providers", func(c *CellPresence) { c.RootFSProviders = nil }, "rootfs_providers"},
		{"bare preloaded", func(c *CellPresence) { c.RootFSProviders = []string{"preloaded"} }, "rootfs_providers[0]"},
		{"empty stack", func(c *CellPresence) { c.RootFSProviders = []string{"docker", "preloaded:"} }, "rootfs_providers[1]"},
		{"full docker URI", func(c *CellPresence) { c.RootFSProviders = []string{"docker:///busybox"} }, "rootfs_providers[0]"},
		{"unknown scheme", func(c *CellPresence) { c.RootFSProviders = []string{"ftp"} }, "rootfs_providers[0]"},
		{"empty provider", func(c *CellPresence) { c.RootFSProviders = []string{""} }, "rootfs_providers[0]"},
		{"duplicate provider", func(c *CellPresence) { c.RootFSProviders = []string{"docker", "oci", "docker"} }, "rootfs_providers[2]"},
		{"empty tag", func(c *CellPresence) { c.PlacementTags = []string{""} }, "placement_tags[0]"},
		{"duplicate optional tag", func(c *CellPresence) { c.OptionalPlacementTags = []string{"a", "a"} }, "optional_placement_tags[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCell()
			tt.mutate(c)
			assertField(t, c.Validate(), tt.field)
		})
	}
}

func TestDomainValidate(t *testing.T) {
	tests := []struct {
		domain Domain
		field  string
	}{
		{Domain{Name: "cf-apps"}, ""},
		{Domain{Name: "cf.apps", ExpiresAt: 1}, ""},
		{Domain{}, "name"},
		{Domain{Name: "cf apps"}, "name"},
		{Domain{Name: strings.Repeat("d", 129)}, "name"},
		{Domain{Name: "x", ExpiresAt: -1}, "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.domain.Name, func(t *testing.T) {
			assertField(t, tt.domain.Validate(), tt.field)
		})
	}
}

func TestActualLRPKeysValidate(t *testing.T) {
	keys := []struct {
		name  string
		key   ActualLRPKey
		field string
	}{
		{"valid", ActualLRPKey{ProcessGuid: "p", Index: 0, Domain: "d"}, ""},
		{"last index", ActualLRPKey{ProcessGuid: "p", Index: MaxInstances - 1, Domain: "d"}, ""},
		{"index past the last", ActualLRPKey{ProcessGuid: "p", Index: MaxInstances, Domain: "d"}, "index"},
		{"negative index", ActualLRPKey{ProcessGuid: "p", Index: -1, Domain: "d"}, "index"},
		{"no guid", ActualLRPKey{Domain: "d"}, "process_guid"},
		{"no domain", ActualLRPKey{ProcessGuid: "p"}, "domain"},
	}
	for _, tt := range keys {
		t.Run(tt.name, func(t *testing.T) {
			assertField(t, tt.key.Validate(), tt.field)
		})
	}
	instanceKeys := []struct {
		name  string
		key   ActualLRPInstanceKey
		field string
	}{
		{"valid", ActualLRPInstanceKey{InstanceGuid: "i-1", CellID: "cell.1"}, ""},
		{"no instance", ActualLRPInstanceKey{CellID: "c"}, "instance_guid"},
		{"instance with dot", ActualLRPInstanceKey{InstanceGuid: "i.1", CellID: "c"}, "instance_guid"},
		{"no cell", ActualLRPInstanceKey{InstanceGuid: "i"}, "cell_id"},
		{"cell with space", ActualLRPInstanceKey{InstanceGuid: "i", CellID: "c 1"}, "cell_id"},
	}
	for _, tt := range instanceKeys {
		t.Run("instance "+tt.name, func(t *testing.T) {
			assertField(t, tt.key.Validate(), tt.field)
		})
	}
	// A whole record checks its key and the form of its instance fields too.
	a := lrpIn(ActualLRPStateRunning, holder)
	a.Domain = ""
	assertField(t, a.Validate(), "domain")
	a = lrpIn(ActualLRPStateRunning, ActualLRPInstanceKey{InstanceGuid: "bad guid", CellID: "c"})
	assertField(t, a.Validate(), "instance_guid")
	a = lrpIn(ActualLRPStateUnclaimed, holder)
	a.CellID = "bad cell"
	assertField(t, a.Validate(), "cell_id")
}
