// Package converge is the brain's health monitor (the converger): it compares what is desired
// with what is there and says what to do about the difference.
//
// Plan is a pure function from a Snapshot of the BBS (DesiredLRPs, ActualLRPs, Tasks, present
// cells, fresh domains) and the time to the Actions that repair it: create missing instances,
// retire extra and orphaned ones (only in fresh domains), mark instances on vanished cells
// SUSPECT, clean up SUSPECT and EVACUATING records, auction stale work again, restart crashed
// instances per their restart policy, and time out, fail, unresolve, delete or call back tasks
// (DESIGN §4). Each action carries the revision of the record it was planned from, so applying
// it is a compare-and-swap and a plan made from a stale snapshot cannot undo newer changes.
//
// The brain runs Plan after BBS events and on a periodic sweep, and also at
// Actions.NextDeadline, the next moment a time limit in the snapshot expires.
//
// NextRestart is the restart policy on its own (Diego's crash schedule by default, settable
// per DesiredLRP).
package converge
