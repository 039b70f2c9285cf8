package brain

import (
	"context"
	"fmt"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// writeBatch is how many instance writes the brain sends in one BBS request; the BBS commits
// them in one etcd transaction (it takes up to 100 per transaction).
const writeBatch = 100

// lrpWrite is one instance write and what to do with its outcome: the record written (nil for
// a retire) or the error of that operation.
type lrpWrite struct {
	op   store.ActualLRPOp
	done func(ctx context.Context, a *models.ActualLRP, err error)
}

// batchJobs groups writes into jobs of up to writeBatch operations, one BBS request each (see
// store.Interface.ApplyActualLRPOps): one request and one etcd transaction for a hundred
// placements instead of a hundred of each.
func (s *session) batchJobs(writes []lrpWrite) []func(context.Context) {
	jobs := make([]func(context.Context), 0, (len(writes)+writeBatch-1)/writeBatch)
	for lo := 0; lo < len(writes); lo += writeBatch {
		chunk := writes[lo:min(lo+writeBatch, len(writes))]
		jobs = append(jobs, func(ctx context.Context) { s.applyBatch(ctx, chunk) })
	}
	return jobs
}

// applyBatch sends ws in one request and hands each operation its own outcome. When the
// request as a whole fails, every operation gets that failure without its error class (it
// says nothing about the records), so each is retried rather than taken as a record that
// moved on.
func (s *session) applyBatch(ctx context.Context, ws []lrpWrite) {
	ops := make([]store.ActualLRPOp, len(ws))
	for i, w := range ws {
		ops[i] = w.op
	}
	s.b.metrics.writeBatch.Observe(float64(len(ops)))
	var results []store.ActualLRPOpResult
	var err error
	select {
	case s.batches <- struct{}{}:
		results, err = s.b.bbs.ApplyActualLRPOps(ctx, ops)
		<-s.batches
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil && len(results) != len(ops) {
		err = fmt.Errorf("%d results for %d operations", len(results), len(ops))
	}
	if err != nil {
		err = fmt.Errorf("write a batch of %d instance operations: %v", len(ops), err)
		for _, w := range ws {
			w.done(ctx, nil, err)
		}
		return
	}
	for i, w := range ws {
		w.done(ctx, results[i].ActualLRP, results[i].Err)
	}
}
