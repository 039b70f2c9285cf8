package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
)

// TestLRPCreateAndGet is the first thing the README tells a newcomer to do: desire the
// example LRP and read back what was stored.
func TestLRPCreateAndGet(t *testing.T) {
	c := startCluster(t, "", "", "--cells", "0")
	out := c.must("lrp", "create", "-f", "examples/lrp-hello.json")
	if !strings.Contains(out, "created hello") {
		t.Fatalf("create printed %q", out)
	}

	var got struct {
		DesiredLRP models.DesiredLRP   `json:"desired_lrp"`
		ActualLRPs []*models.ActualLRP `json:"actual_lrps"`
	}
	if err := json.Unmarshal([]byte(c.must("lrp", "get", "hello", "--json")), &got); err != nil {
		t.Fatalf("lrp get --json: %v", err)
	}
	var want models.DesiredLRP
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "lrp-hello.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if got.DesiredLRP.CreatedAt == 0 || got.DesiredLRP.Revision == 0 {
		t.Errorf("stored record lacks created_at/revision: %+v", got.DesiredLRP)
	}
	got.DesiredLRP.CreatedAt, got.DesiredLRP.Revision = 0, 0
	if !reflect.DeepEqual(normalize(t, got.DesiredLRP), normalize(t, want)) {
		t.Errorf("lrp get returned\n%+v\nwant what was created\n%+v", got.DesiredLRP, want)
	}
	if len(got.ActualLRPs) != int(want.Instances) {
		t.Fatalf("%d actual LRPs, want %d", len(got.ActualLRPs), want.Instances)
	}
	for i, a := range got.ActualLRPs {
		if a.Index != int32(i) || a.State != models.ActualLRPStateUnclaimed {
			t.Errorf("instance %d = index %d state %s, want UNCLAIMED", i, a.Index, a.State)
		}
	}

	c.must("lrp", "scale", "hello", "5")
	ls := c.must("lrp", "ls")
	if !strings.Contains(ls, "0/5") {
		t.Errorf("lrp ls after scale to 5:\n%s", ls)
	}
}

// normalize round-trips a record through JSON so that nil and empty slices compare equal.
func normalize(t *testing.T, d models.DesiredLRP) map[string]any {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBadInputIsRefusedClearly: each bad document gets a one-line error naming the problem,
// a non-zero exit, and nothing is stored.
func TestBadInputIsRefusedClearly(t *testing.T) {
	c := startCluster(t, "", "", "--cells", "0")
	valid := `"domain":"d","rootfs":"preloaded:busybox","action":{"run":{"path":"/bin/true"}}`
	cases := []struct {
		name, doc, want string
	}{
		{"negative instances", `{"process_guid":"a","instances":-1,` + valid + `}`, "instances: must not be negative"},
		{"memory -1", `{"process_guid":"a","instances":1,"memory_mb":-1,` + valid + `}`, "memory_mb: must not be negative"},
		{"unknown rootfs scheme", `{"process_guid":"a","instances":1,"domain":"d","rootfs":"ftp://x","action":{"run":{"path":"/x"}}}`, `unknown rootfs scheme "ftp"`},
		{"process guid with spaces", `{"process_guid":"a b","instances":1,` + valid + `}`, "process_guid: contains ' '"},
		{"malformed JSON", `{"process_guid":"a",`, "body: JSON ends early"},
		{"huge annotation", `{"process_guid":"a","instances":1,"annotation":"` + strings.Repeat("x", 5<<20) + `",` + valid + `}`, "413 TooLarge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.runStdin(tc.doc, "lrp", "create", "-f", "-")
			if r.code == 0 {
				t.Fatalf("accepted: %s", r.stdout)
			}
			line := strings.TrimSpace(r.stderr)
			if strings.Count(line, "\n") != 0 || !strings.Contains(line, tc.want) {
				t.Errorf("stderr = %q, want one line containing %q", r.stderr, tc.want)
			}
		})
	}
	if ls := c.must("lrp", "ls", "--json"); strings.TrimSpace(ls) != "[]" {
		t.Errorf("bad input stored something: %s", ls)
	}
}

// TestStateSurvivesRestart: stopping `trellis dev` and starting it again on the same data dir
// keeps every record.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	listen := freeAddr(t)
	c := startCluster(t, dir, listen, "--cells", "0")
	c.must("lrp", "create", "-f", "examples/lrp-hello.json")
	c.must("task", "create", "-f", "examples/task-hello.json")
	c.stop()

	c = startCluster(t, dir, listen, "--cells", "0")
	if out := c.must("lrp", "ls"); !strings.Contains(out, "hello") {
		t.Errorf("LRP lost across restart:\n%s", out)
	}
	if out := c.must("task", "get", "hello-task"); !strings.Contains(out, "PENDING") {
		t.Errorf("task lost across restart:\n%s", out)
	}
}
