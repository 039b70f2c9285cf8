// Package agent is the cell agent: it announces the cell's presence to the BBS, pulls the work
// placed on the cell, runs it through an isolation.Backend and reports its state.
//
// An Agent is built with New from a Config (LoadConfig reads the YAML form) and Options (the
// BBS as a store.Interface — a *client.Client holding the cell's certificate — and optionally a
// backend; nil builds the one Config.Backend names). Run restores what an earlier agent left on
// the backend, heartbeats, follows the cell's event stream with periodic full reads, and runs
// each LRP instance and task in a goroutine of its own through packages agent/actions,
// agent/health, agent/cache and agent/logs. Run returns when its context ends — the containers
// keep running for the next agent — or when a drain (Drain, or the BBS marking the cell
// draining) has evacuated the cell. Serve wraps it for `trellis agent run`: the service stop
// drains. APIHandler is the operator's HTTPS API (logs, metrics, containers).
//
//	a, err := agent.New(ctx, cfg, agent.Options{Store: bbsClient, Logger: logger})
//	...
//	err = a.Run(ctx)
//
// Containers carry their work's identity in their properties (Prop* constants), which is how
// a restarted agent finds them again. See docs/agent.md for the behaviour in full.
package agent
