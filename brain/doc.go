// Package brain is the scheduler (the auctioneer) and the health monitor (the converger),
// run by one leader-elected process over the BBS.
package brain
