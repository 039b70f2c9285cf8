// Package sim runs a trellis fleet in one process to prove how it scales: N simulated cells —
// the real agent code (package agent) on the in-memory isolation backend
// (isolationtest.NewMemory), with real heartbeats and the real event stream — against the
// real BBS (bbs/standalone: the HTTP server and the store on an embedded etcd, or an
// external etcd) and the real brain (auctioneer and converger).
//
// A Cluster is started with Start and driven by the scenarios of the issue, each returning
// its figures:
//
//	c, err := sim.Start(ctx, cfg)
//	defer c.Close()
//	fill, err := c.Fill(ctx, sim.DefaultFill())          // push Diego's mix, wait for RUNNING
//	loss, err := c.CellLoss(ctx, 0.2)                    // kill 20% of the cells at once
//	drain, err := c.Drain(ctx, 0.1)                      // drain 10% of the cells
//	churn, err := c.Churn(ctx, sim.DefaultChurn())       // crashes at Diego's rates + pushes
//
// Cells talk to the BBS over HTTP (Transport "http": plain HTTP on loopback, each cell
// identified by the X-Trellis-Identity header, so a thousand cells need no certificates) or
// call the BBS's store in-process (Transport "inproc", which leaves the HTTP layer out of
// the measurement). The simulator follows the BBS event stream itself to know when work is
// RUNNING, and times every BBS call the cells and the brain make.
//
// The command test/sim/simbench (make bench-sim) runs the scenarios and prints the figures
// next to Diego's, Nomad's and Kubernetes' published ones; docs/scale.md records a run.
package sim
