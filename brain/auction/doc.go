// Package auction is the brain's scheduler (the auctioneer): it decides which cell runs each
// ActualLRP instance and Task that needs a home.
//
// Auction is a pure function over a snapshot of cells (CellState) and a batch of work (LRPWork,
// TaskWork); it returns, for every piece of work, either the cell it goes to or the placement
// error to record (ErrNoRootFSMatch, ErrNoPlacementTagsMatch, *InsufficientResourcesError —
// Diego's words). See Auction for the order, the filters and the score (DESIGN §3).
//
// Batcher wraps Auction for the running brain: work is added as it arrives (from BBS events and
// the converger), one auction runs at a time, and work that arrives during an auction joins the
// next. Placement is pulled, not pushed: the caller records each decision on the BBS record
// (store.PlaceActualLRP / PlaceTask, or FailActualLRPPlacement / FailTaskPlacement with the
// error's message) and the chosen cell claims the work.
//
//	b, err := auction.NewBatcher(cfg) // cfg.Cells reads the cells, cfg.Deliver writes decisions
//	go b.Run(ctx)
//	b.AddLRPs(auction.LRPWorkFor(desired, 0))
//
// Performance: a batch is indexed once (cells by rootfs and placement tags, instances by
// process), so placing is one allocation-free pass over the compatible cells per piece of work.
// BenchmarkAuction (and hack/bench.d/30-auction.sh) places 10,000 instances over 1,000 cells.
package auction
