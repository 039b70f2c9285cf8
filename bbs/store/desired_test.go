package store_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// instances returns the ORDINARY instances of guid as index → state.
func instances(t *testing.T, s *store.Store, guid string) map[int32]*models.ActualLRP {
	t.Helper()
	all, _, err := s.ActualLRPs(ctxT(t), store.ActualLRPFilter{ProcessGuid: guid})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]*models.ActualLRP, len(all))
	for _, a := range all {
		if a.Presence == models.PresenceOrdinary {
			out[a.Index] = a
		}
	}
	return out
}

func TestDesireLRPCreatesUnclaimedInstances(t *testing.T) {
	tests := []struct {
		name      string
		instances int32
	}{
		{"none", 0},
		{"three", 3},
		{"one batch exactly", 100},
		// Over etcd's 128 operations per transaction: the instances follow in batches.
		{"several batches", 250},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := ctxT(t)
			got, err := s.DesireLRP(ctx, desiredLRP("web", tt.instances))
			if err != nil {
				t.Fatal(err)
			}
			if got.Revision == 0 || got.CreatedAt == 0 {
				t.Fatalf("DesireLRP returned revision %d, created_at %d; want both set", got.Revision, got.CreatedAt)
			}
			inst := instances(t, s, "web")
			if len(inst) != int(tt.instances) {
				t.Fatalf("%d instances, want %d", len(inst), tt.instances)
			}
			for i := range tt.instances {
				a := inst[i]
				if a == nil || a.State != models.ActualLRPStateUnclaimed || a.Domain != "apps" || a.Since == 0 || a.Revision == 0 {
					t.Fatalf("instance %d = %+v, want UNCLAIMED in domain apps with since and revision", i, a)
				}
			}
		})
	}
}

func TestDesiredLRPCRUD(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)

	lrp := desiredLRP("web", 2)
	lrp.Routes = json.RawMessage(`{"http":["web.example.com"]}`)
	created := must[*models.DesiredLRP](t)(s.DesireLRP(ctx, lrp))

	_, err := s.DesireLRP(ctx, desiredLRP("web", 1))
	wantErr(t, err, models.ErrAlreadyExists, "desire twice")

	bad := desiredLRP("bad guid!", 1)
	_, err = s.DesireLRP(ctx, bad)
	wantErr(t, err, models.ErrInvalidRecord, "desire invalid")

	got := must[*models.DesiredLRP](t)(s.DesiredLRP(ctx, "web"))
	if got.Revision != created.Revision || string(got.Routes) != string(lrp.Routes) || got.CreatedAt != created.CreatedAt {
		t.Fatalf("DesiredLRP = %+v, want the stored record at revision %d", got, created.Revision)
	}
	_, err = s.DesiredLRP(ctx, "nope")
	wantErr(t, err, models.ErrNotFound, "read missing")

	// Listing and filters.
	other := desiredLRP("worker", 0)
	other.Domain = "jobs"
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, other))
	for _, tc := range []struct {
		name   string
		filter store.DesiredLRPFilter
		want   []string
	}{
		{"all", store.DesiredLRPFilter{}, []string{"web", "worker"}},
		{"domain", store.DesiredLRPFilter{Domain: "jobs"}, []string{"worker"}},
		{"guids", store.DesiredLRPFilter{ProcessGuids: []string{"worker", "web", "nope"}}, []string{"web", "worker"}},
		{"guids and domain", store.DesiredLRPFilter{ProcessGuids: []string{"worker", "web"}, Domain: "apps"}, []string{"web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, rev, err := s.DesiredLRPs(ctx, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var guids []string
			for _, l := range list {
				guids = append(guids, l.ProcessGuid)
			}
			if fmt.Sprint(guids) != fmt.Sprint(tc.want) || rev < created.Revision {
				t.Fatalf("DesiredLRPs = %v at %d, want %v at >= %d", guids, rev, tc.want, created.Revision)
			}
		})
	}

	// Update in place.
	ann := "v2"
	updated := must[*models.DesiredLRP](t)(s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Annotation: &ann}, created.Revision))
	if updated.Annotation != "v2" || updated.Revision <= created.Revision || updated.MemoryMB != 256 {
		t.Fatalf("update = %+v", updated)
	}
	_, err = s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Annotation: &ann}, created.Revision)
	wantErr(t, err, models.ErrConflict, "update with stale revision")
	tooMany := int32(models.MaxInstances + 1)
	_, err = s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &tooMany}, 0)
	wantErr(t, err, models.ErrInvalidRecord, "update to invalid instances")
	_, err = s.UpdateDesiredLRP(ctx, "nope", models.DesiredLRPUpdate{Annotation: &ann}, 0)
	wantErr(t, err, models.ErrNotFound, "update missing")

	// Remove deletes the record and all its instances, every presence.
	wantErr(t, s.RemoveDesiredLRP(ctx, "web"), nil, "remove")
	_, err = s.DesiredLRP(ctx, "web")
	wantErr(t, err, models.ErrNotFound, "read removed")
	if n := len(instances(t, s, "web")); n != 0 {
		t.Fatalf("%d instances left after remove", n)
	}
	wantErr(t, s.RemoveDesiredLRP(ctx, "web"), models.ErrNotFound, "remove twice")
}

func TestScaleDesiredLRP(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 3)))

	// Index 1 runs, so scaling must keep its record as it is.
	claimAndStart(t, s, lrpKey("web", 1), "cell-a", "i-1")

	steps := []int32{5, 205, 2, 0, 4}
	for _, n := range steps {
		t.Run(fmt.Sprintf("to %d", n), func(t *testing.T) {
			n := n
			if _, err := s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &n}, 0); err != nil {
				t.Fatal(err)
			}
			inst := instances(t, s, "web")
			if len(inst) != int(n) {
				t.Fatalf("%d instances, want %d", len(inst), n)
			}
			for i := range n {
				if inst[i] == nil {
					t.Fatalf("index %d missing", i)
				}
			}
			if n > 1 && n != 4 && inst[1].State != models.ActualLRPStateRunning {
				t.Fatalf("index 1 is %s after scaling to %d, want it still RUNNING", inst[1].State, n)
			}
		})
	}
}

func TestScaleDownRemovesEveryPresence(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 2)))
	key := lrpKey("web", 1)
	ik := claimAndStart(t, s, key, "cell-a", "i-1")
	must[*models.ActualLRP](t)(s.EvacuateActualLRP(ctx, key, ik))

	one := int32(1)
	must[*models.DesiredLRP](t)(s.UpdateDesiredLRP(ctx, "web", models.DesiredLRPUpdate{Instances: &one}, 0))
	all, _, err := s.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Index != 0 {
		t.Fatalf("after scale-down records = %v, want only index 0", all)
	}
}

func TestActualLRPsFilters(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 3)))
	job := desiredLRP("webhook", 2) // a guid that "web" is a prefix of
	job.Domain = "jobs"
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, job))
	claimAndStart(t, s, lrpKey("web", 2), "cell-a", "i-a")
	claimAndStart(t, s, models.ActualLRPKey{ProcessGuid: "webhook", Index: 0, Domain: "jobs"}, "cell-a", "i-b")
	claimAndStart(t, s, lrpKey("web", 0), "cell-b", "i-c")

	idx := int32(2)
	for _, tc := range []struct {
		name   string
		filter store.ActualLRPFilter
		want   string
	}{
		{"all", store.ActualLRPFilter{}, "[web/0 web/1 web/2 webhook/0 webhook/1]"},
		{"process", store.ActualLRPFilter{ProcessGuid: "web"}, "[web/0 web/1 web/2]"},
		{"process and index", store.ActualLRPFilter{ProcessGuid: "web", Index: &idx}, "[web/2]"},
		{"cell", store.ActualLRPFilter{CellID: "cell-a"}, "[web/2 webhook/0]"},
		{"domain", store.ActualLRPFilter{Domain: "jobs"}, "[webhook/0 webhook/1]"},
		{"cell and domain", store.ActualLRPFilter{CellID: "cell-a", Domain: "apps"}, "[web/2]"},
		{"unknown cell", store.ActualLRPFilter{CellID: "cell-z"}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, rev, err := s.ActualLRPs(ctx, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(list))
			for i, a := range list {
				got[i] = fmt.Sprintf("%s/%d", a.ProcessGuid, a.Index)
			}
			if fmt.Sprint(got) != tc.want || rev == 0 {
				t.Fatalf("ActualLRPs(%+v) = %v at %d, want %s", tc.filter, got, rev, tc.want)
			}
		})
	}
}

// TestListPagination reads more records than one page holds and checks none is lost or
// repeated.
func TestListPagination(t *testing.T) {
	s := store.New(shared.Client(), store.Options{Prefix: fmt.Sprintf("/test/pagination-%d/", prefixes.Add(1)), PageSize: 7})
	ctx := ctxT(t)
	must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP("web", 50)))
	list, _, err := s.ActualLRPs(ctx, store.ActualLRPFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 50 {
		t.Fatalf("listed %d records, want 50", len(list))
	}
	for i, a := range list {
		if a.Index != int32(i) {
			t.Fatalf("record %d has index %d: order broken", i, a.Index)
		}
	}
}

// TestDesiredLRPsByManyGuids reads more named records than one transaction may hold.
func TestDesiredLRPsByManyGuids(t *testing.T) {
	s := newStore(t)
	ctx := ctxT(t)
	var guids []string
	for i := range 130 {
		g := fmt.Sprintf("p%03d", i)
		guids = append(guids, g)
		must[*models.DesiredLRP](t)(s.DesireLRP(ctx, desiredLRP(g, 0)))
	}
	list, _, err := s.DesiredLRPs(ctx, store.DesiredLRPFilter{ProcessGuids: append(guids, "missing", "p000")})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(guids) {
		t.Fatalf("read %d records, want %d", len(list), len(guids))
	}
	for i, l := range list {
		if l.ProcessGuid != guids[i] {
			t.Fatalf("record %d is %s, want %s", i, l.ProcessGuid, guids[i])
		}
	}
}
