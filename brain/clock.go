package brain

import "time"

// Clock tells the converger the time and runs functions later. The brain uses it for Plan's
// notion of now, for scheduled restarts of crashed instances and for the converger's next
// deadline; leader election, debouncing and the periodic sweep use the system clock.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a scheduled call of a Clock.
type Timer interface {
	// Stop prevents the call if it has not run yet, and reports whether it did so.
	Stop() bool
}

// SystemClock is the Clock of the operating system.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
