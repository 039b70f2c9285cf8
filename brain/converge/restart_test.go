package converge

import (
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

func TestNextRestartDiegoSchedule(t *testing.T) {
	policy := models.DefaultRestartPolicy()
	crashedAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const never = -1
	tests := []struct {
		n    int32
		wait time.Duration // never: give up
	}{
		{1, 0},
		{2, 0},
		{3, 30 * time.Second},
		{4, time.Minute},
		{5, 2 * time.Minute},
		{6, 4 * time.Minute},
		{7, 8 * time.Minute},
		{8, 16 * time.Minute},
		{9, 16 * time.Minute},
		{10, 16 * time.Minute},
		{11, 16 * time.Minute},
		{12, 16 * time.Minute},
		{199, 16 * time.Minute},
		{200, 16 * time.Minute},
		{201, never},
		{5000, never},
	}
	for _, tt := range tests {
		at, giveUp := NextRestart(policy, tt.n, time.Second, crashedAt)
		if tt.wait == never {
			if !giveUp {
				t.Errorf("crash %d: restart at +%v, want give up", tt.n, at.Sub(crashedAt))
			}
			continue
		}
		if giveUp || !at.Equal(crashedAt.Add(tt.wait)) {
			t.Errorf("crash %d: at +%v giveUp=%v, want +%v", tt.n, at.Sub(crashedAt), giveUp, tt.wait)
		}
	}
}

func TestNextRestartReset(t *testing.T) {
	policy := models.DefaultRestartPolicy()
	crashedAt := time.Unix(1_000_000, 0)
	tests := []struct {
		name       string
		n          int32
		runningFor time.Duration
		want       time.Duration
		giveUp     bool
	}{
		{"ran just over 5 min: counts as crash 1", 50, 5*time.Minute + time.Nanosecond, 0, false},
		{"ran exactly 5 min: no reset", 50, 5 * time.Minute, 16 * time.Minute, false},
		{"ran long even past the limit of restarts", 500, time.Hour, 0, false},
		{"the caller passing 1 for a reset gives the same answer", 1, time.Hour, 0, false},
		{"short run after 4 crashes", 4, 10 * time.Second, time.Minute, false},
		{"never ran", 3, 0, 30 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, giveUp := NextRestart(policy, tt.n, tt.runningFor, crashedAt)
			if giveUp != tt.giveUp || !giveUp && !at.Equal(crashedAt.Add(tt.want)) {
				t.Fatalf("got +%v giveUp=%v, want +%v giveUp=%v", at.Sub(crashedAt), giveUp, tt.want, tt.giveUp)
			}
		})
	}
}

func TestNextRestartCustomPolicy(t *testing.T) {
	policy := (&models.RestartPolicy{
		ImmediateRestarts: 1, BackoffBaseMs: 1000, BackoffMaxMs: 10_000, MaxRestarts: 7, ResetAfterMs: 60_000,
	}).WithDefaults()
	crashedAt := time.Unix(0, 0)
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		n := int32(i + 1)
		at, giveUp := NextRestart(policy, n, 0, crashedAt)
		if giveUp || at.Sub(crashedAt) != w {
			t.Errorf("crash %d: +%v giveUp=%v, want +%v", n, at.Sub(crashedAt), giveUp, w)
		}
	}
	if _, giveUp := NextRestart(policy, 8, 0, crashedAt); !giveUp {
		t.Error("crash 8 of a 7-restart policy did not give up")
	}
	if at, _ := NextRestart(policy, 6, time.Minute+1, crashedAt); !at.Equal(crashedAt) {
		t.Errorf("a crash after more than the custom reset time waits %v, want 0", at.Sub(crashedAt))
	}
	// Partial policies take Diego's defaults for the fields left zero.
	partial := (&models.RestartPolicy{MaxRestarts: 3}).WithDefaults()
	if at, giveUp := NextRestart(partial, 3, 0, crashedAt); giveUp || at.Sub(crashedAt) != 30*time.Second {
		t.Errorf("partial policy crash 3: +%v giveUp=%v, want +30s", at.Sub(crashedAt), giveUp)
	}
	if _, giveUp := NextRestart(partial, 4, 0, crashedAt); !giveUp {
		t.Error("partial policy crash 4 did not give up")
	}
}
