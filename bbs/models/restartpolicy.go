package models

// Diego's crash policy, the default of every DesiredLRP.
const (
	DefaultImmediateRestarts = 2
	DefaultBackoffBaseMs     = 30_000      // 30 s
	DefaultBackoffMaxMs      = 16 * 60_000 // 16 min
	DefaultMaxRestarts       = 200
	DefaultResetAfterMs      = 5 * 60_000 // 5 min
)

// DefaultRestartPolicy returns Diego's crash policy: crashes 1 and 2 restart at once; from the
// 3rd, wait 30 s × 2^(n−3) capped at 16 min; after 200 restarts stop; a crash after more than
// 5 min RUNNING resets the count.
func DefaultRestartPolicy() RestartPolicy {
	return RestartPolicy{
		ImmediateRestarts: DefaultImmediateRestarts,
		BackoffBaseMs:     DefaultBackoffBaseMs,
		BackoffMaxMs:      DefaultBackoffMaxMs,
		MaxRestarts:       DefaultMaxRestarts,
		ResetAfterMs:      DefaultResetAfterMs,
	}
}

// WithDefaults returns p with every zero field replaced by its DefaultRestartPolicy value. A
// nil p yields DefaultRestartPolicy. Because zero means "default", a policy cannot ask for
// zero immediate restarts or an unlimited count; validated policies have no negative fields.
func (p *RestartPolicy) WithDefaults() RestartPolicy {
	d := DefaultRestartPolicy()
	if p == nil {
		return d
	}
	out := *p
	if out.ImmediateRestarts == 0 {
		out.ImmediateRestarts = d.ImmediateRestarts
	}
	if out.BackoffBaseMs == 0 {
		out.BackoffBaseMs = d.BackoffBaseMs
	}
	if out.BackoffMaxMs == 0 {
		out.BackoffMaxMs = d.BackoffMaxMs
	}
	if out.MaxRestarts == 0 {
		out.MaxRestarts = d.MaxRestarts
	}
	if out.ResetAfterMs == 0 {
		out.ResetAfterMs = d.ResetAfterMs
	}
	return out
}
