// Package agent is the cell agent: it announces the cell's presence to the BBS, pulls the work
// placed on the cell, runs it through an isolation.Backend and reports its state.
package agent
