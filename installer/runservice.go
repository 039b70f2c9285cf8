package installer

import (
	"context"
	"time"
)

// Program is what RunService runs.
type Program struct {
	// Run runs the agent until its context ends or its work is over (for the agent: a drain
	// has finished).
	Run func(ctx context.Context) error
	// Stop is called once when the service manager asks the service to stop or the machine
	// shuts down; Run must return some time after. It must not block: for the agent it asks
	// for a drain (agent.Drain). Nil cancels Run's context instead.
	Stop func()
}

// StopProgress is how often a stopping service tells the service manager it is still making
// progress, and StopWaitHint how long the manager should wait for the next report before it
// deems the service hung. A drain can take the whole evacuation timeout (10 min); the
// reports keep the manager waiting for as long as it lasts.
const (
	StopProgress = 5 * time.Second
	StopWaitHint = 30 * time.Second
)

// request is a service manager's request, reduced to what serve handles.
type request int

const (
	reqInterrogate request = iota
	reqStop                // stop or shutdown
)

// phase is a service state as reported to the service manager.
type phase int

const (
	phaseStarting phase = iota
	phaseRunning
	phaseStopping
	phaseStopped
)

// report is one status sent to the service manager.
type report struct {
	phase      phase
	checkpoint uint32        // increases while starting or stopping
	waitHint   time.Duration // how long until the next report
}

// serve runs p, answering the service manager's requests from reqs and sending its states
// through send: starting, running, stopping (with a rising checkpoint every progress while
// Run has not returned) and stopped. It returns Run's error.
func serve(ctx context.Context, p Program, reqs <-chan request, send func(report), progress time.Duration) error {
	send(report{phase: phaseStarting, checkpoint: 1, waitHint: StopWaitHint})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	current := report{phase: phaseRunning}
	send(current)

	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case r := <-reqs:
			switch {
			case r == reqInterrogate, ticker != nil:
				send(current)
			case r == reqStop:
				current = report{phase: phaseStopping, checkpoint: 1, waitHint: StopWaitHint}
				send(current)
				ticker = time.NewTicker(progress)
				tick = ticker.C
				if p.Stop != nil {
					p.Stop()
				} else {
					cancel()
				}
			}
		case <-tick:
			current.checkpoint++
			send(current)
		case err := <-done:
			send(report{phase: phaseStopped})
			return err
		}
	}
}
