package converge

import (
	"time"

	"github.com/trellis-run/trellis/bbs/models"
)

// NextRestart applies a crash policy to one crash. policy must have its defaults applied
// (models.RestartPolicy.WithDefaults). crashCount is the number of crashes including this one,
// as the record's crash_count holds it after the crash; runningFor is how long the instance had
// been RUNNING when it crashed (0 if it never got there); crashedAt is when it crashed.
//
// With Diego's policy (the default): crashes 1 and 2 restart at crashedAt; the nth crash from
// the 3rd on waits 30 s × 2^(n−3), capped at 16 min; crash 200 is the last restarted, and from
// crash 201 on giveUp is true (the instance stays CRASHED).
//
// The reset: a crash after more than policy.ResetAfterMs RUNNING counts as crash 1 whatever
// crashCount says, so it restarts at once. NextRestart cannot change the stored count, so for
// later crashes to back off from 1 again the store should write crash_count = 1 for such a
// crash instead of incrementing it (as Diego's BBS does); a caller that tracks the count
// itself passes crashCount = 1 for it. Either way NextRestart gives the same answer.
func NextRestart(policy models.RestartPolicy, crashCount int32, runningFor time.Duration, crashedAt time.Time) (restartAt time.Time, giveUp bool) {
	if policy.ResetAfterMs > 0 && runningFor > time.Duration(policy.ResetAfterMs)*time.Millisecond {
		crashCount = 1
	}
	if crashCount <= policy.ImmediateRestarts {
		return crashedAt, false
	}
	if crashCount > policy.MaxRestarts {
		return time.Time{}, true
	}
	return crashedAt.Add(backoff(policy, crashCount-policy.ImmediateRestarts-1)), false
}

// backoff returns BackoffBaseMs × 2^exponent, capped at BackoffMaxMs, without overflowing.
func backoff(policy models.RestartPolicy, exponent int32) time.Duration {
	base := time.Duration(policy.BackoffBaseMs) * time.Millisecond
	limit := time.Duration(policy.BackoffMaxMs) * time.Millisecond
	if base <= 0 {
		return 0
	}
	d := base
	for range exponent {
		if d >= limit {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
