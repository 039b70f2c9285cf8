package models

import (
	"encoding/json"
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
