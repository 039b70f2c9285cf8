// Package brain is the scheduler (the auctioneer) and the health monitor (the converger),
// run by one leader-elected process over the BBS.
//
// The decisions are pure functions in sub-packages, so they are tested rule by rule without a
// BBS: brain/auction places instances and tasks on cells (Auction, and the Batcher that feeds
// it one batch at a time), and brain/converge plans the repairs that bring actual state back
// to desired state (Plan, NextRestart). The brain process reads the BBS, calls them and writes
// their decisions back as compare-and-swap transitions.
//
// This package is that process. A Brain contends for a BBS lock; while it holds it, it keeps
// an in-memory view of the BBS (a full read, then the event stream), sends every instance and
// task that needs a home to the auction at once, runs the converger after relevant events,
// on a periodic sweep and at the plan's next deadline, and writes every result with the
// revision it was decided from. When it cannot renew the lock it stops acting before the
// lease can have expired; on a clean shutdown it releases the lock so that a standby takes
// over at once.
//
//	b, err := brain.New(brain.DefaultConfig(), bbsClient, logger, prometheus.DefaultRegisterer)
//	if err != nil { ... }
//	err = b.Run(ctx) // until ctx ends
//
// docs/brain.md describes the election, the view, the triggers and the metrics.
package brain
