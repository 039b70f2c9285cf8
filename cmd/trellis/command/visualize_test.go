package command

import (
	"strings"
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

func TestRenderFrame(t *testing.T) {
	cells := []*models.CellPresence{
		{CellID: "cell-b", Zone: "z2", Capacity: models.Resources{MemoryMB: 4096, Containers: 100},
			Available: &models.Resources{MemoryMB: 3072, Containers: 98}, PlacementTags: []string{"gpu"}},
		{CellID: "cell-a", Zone: "z1", Capacity: models.Resources{MemoryMB: 2048, Containers: 50}, Draining: true},
	}
	lrp := func(guid string, idx int32, state, presence, cell, perr string) *models.ActualLRP {
		return &models.ActualLRP{ActualLRPKey: models.ActualLRPKey{ProcessGuid: guid, Index: idx},
			ActualLRPInstanceKey: models.ActualLRPInstanceKey{CellID: cell}, State: state, Presence: presence, PlacementError: perr}
	}
	actual := []*models.ActualLRP{
		lrp("web", 0, models.ActualLRPStateRunning, models.PresenceOrdinary, "cell-b", ""),
		lrp("web", 1, models.ActualLRPStateClaimed, models.PresenceOrdinary, "cell-b", ""),
		lrp("api", 0, models.ActualLRPStateRunning, models.PresenceEvacuating, "cell-a", ""),
		lrp("api", 0, models.ActualLRPStateCrashed, models.PresenceOrdinary, "cell-b", ""),
		lrp("win", 0, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, "", "found no compatible cell for required rootfs"),
		lrp("win", 1, models.ActualLRPStateUnclaimed, models.PresenceOrdinary, "", "found no compatible cell for required rootfs"),
		lrp("old", 0, models.ActualLRPStateRunning, models.PresenceSuspect, "cell-x", ""),
	}
	tasks := []*models.Task{{TaskGuid: "t", State: models.TaskStateRunning}, {TaskGuid: "u", State: models.TaskStatePending}}
	var b strings.Builder
	renderFrame(&b, cells, actual, tasks, time.Date(2026, 1, 1, 12, 0, 1, 0, time.UTC), false)
	got := b.String()
	for _, want := range []string{
		"2 cells · 5 instances (1 running, 1 claimed, 2 unclaimed, 1 crashed) · 1 tasks running   12:00:01",
		"cell-a (draining)  z1    -     2048M        50          ◐",
		"cell-b             z2    gpu   3072/4096M   98/100      ✖●○",
		"cell-x (gone)",
		"unplaced  ◌◌",
		"2 × found no compatible cell for required rootfs",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("frame lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "cell-a") > strings.Index(got, "cell-b") {
		t.Errorf("cells not ordered by zone:\n%s", got)
	}
	if strings.Contains(got, "\x1b[") {
		t.Errorf("colour codes without colour:\n%q", got)
	}
	b.Reset()
	renderFrame(&b, cells, actual, tasks, time.Now(), true)
	if !strings.Contains(b.String(), "\x1b[32m●\x1b[0m") {
		t.Errorf("running mark not green with colour on:\n%q", b.String())
	}
}

func TestMarksBoundedPerRow(t *testing.T) {
	var list []*models.ActualLRP
	for i := 0; i < maxMarks+7; i++ {
		list = append(list, &models.ActualLRP{ActualLRPKey: models.ActualLRPKey{ProcessGuid: "p", Index: int32(i)}, State: models.ActualLRPStateRunning})
	}
	got := marks(list, func(m mark) string { return m.glyph })
	if !strings.HasSuffix(got, " +7") || strings.Count(got, "●") != maxMarks {
		t.Errorf("marks = %q", got)
	}
}
