package command

import (
	"testing"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

func TestBackoffFollowsTheRestartPolicy(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	crashed := func(count int32, ago, ran time.Duration) *models.ActualLRP {
		since := now.Add(-ago)
		return &models.ActualLRP{State: models.ActualLRPStateCrashed, CrashCount: count,
			Since: since.UnixNano(), RunningSince: since.Add(-ran).UnixNano()}
	}
	cases := []struct {
		name   string
		a      *models.ActualLRP
		policy *models.RestartPolicy
		want   string
	}{
		{"second crash restarts at once", crashed(2, time.Second, time.Second), nil, "restarting now"},
		{"third crash waits 30s", crashed(3, 5*time.Second, time.Second), nil, "restarts in 25s"},
		{"fourth crash waits a minute", crashed(4, 0, time.Second), nil, "restarts in 1m0s"},
		{"long run resets the count", crashed(9, 0, 10*time.Minute), nil, "restarting now"},
		{"the LRP's own policy", crashed(2, 0, time.Second), &models.RestartPolicy{ImmediateRestarts: 1, BackoffBaseMs: 5000}, "restarts in 5s"},
		{"gives up after max", crashed(201, 0, time.Second), nil, "not restarted: 201 crashes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoff(tc.a, tc.policy, now); got != tc.want {
				t.Errorf("backoff = %q, want %q", got, tc.want)
			}
		})
	}
}
