package converge

import (
	"fmt"
	"time"
)

// Options are the converger's time limits. A zero field means its DefaultOptions value.
type Options struct {
	// StaleUnclaimedAfter is how long an UNCLAIMED instance, or a PENDING task that is not
	// yet running, may sit before it is auctioned again (from the last change of the record).
	StaleUnclaimedAfter time.Duration
	// EvacuationTimeout is how long an EVACUATING record may wait for its replacement.
	EvacuationTimeout time.Duration
	// PendingTaskTimeout is how long a task may stay PENDING before it fails with
	// TaskNotStartedReason.
	PendingTaskTimeout time.Duration
	// ResolvingTaskTimeout is how long a task may stay RESOLVING (a client resolved it and
	// did not delete it) before it goes back to COMPLETED.
	ResolvingTaskTimeout time.Duration
	// CompletedTaskTTL is how long a COMPLETED task is kept before it is deleted.
	CompletedTaskTTL time.Duration
}

// DefaultOptions returns DESIGN §4's numbers.
func DefaultOptions() Options {
	return Options{
		StaleUnclaimedAfter:  30 * time.Second,
		EvacuationTimeout:    10 * time.Minute,
		PendingTaskTimeout:   30 * time.Minute,
		ResolvingTaskTimeout: 30 * time.Second,
		CompletedTaskTTL:     120 * time.Second,
	}
}

// Validate reports whether o can be used: no duration may be negative.
func (o Options) Validate() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"stale unclaimed after", o.StaleUnclaimedAfter},
		{"evacuation timeout", o.EvacuationTimeout},
		{"pending task timeout", o.PendingTaskTimeout},
		{"resolving task timeout", o.ResolvingTaskTimeout},
		{"completed task TTL", o.CompletedTaskTTL},
	} {
		if f.d < 0 {
			return fmt.Errorf("converge options: %s %v must not be negative", f.name, f.d)
		}
	}
	return nil
}

// withDefaults replaces zero fields by their defaults.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	for _, f := range []struct{ v, def *time.Duration }{
		{&o.StaleUnclaimedAfter, &d.StaleUnclaimedAfter},
		{&o.EvacuationTimeout, &d.EvacuationTimeout},
		{&o.PendingTaskTimeout, &d.PendingTaskTimeout},
		{&o.ResolvingTaskTimeout, &d.ResolvingTaskTimeout},
		{&o.CompletedTaskTTL, &d.CompletedTaskTTL},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return o
}
