// Package brain is the scheduler (the auctioneer) and the health monitor (the converger),
// run by one leader-elected process over the BBS.
//
// The decisions are pure functions in sub-packages, so they are tested rule by rule without a
// BBS: brain/auction places instances and tasks on cells (Auction, and the Batcher that feeds
// it one batch at a time), and brain/converge plans the repairs that bring actual state back
// to desired state (Plan, NextRestart). The brain process reads the BBS, calls them and writes
// their decisions back as compare-and-swap transitions.
package brain
