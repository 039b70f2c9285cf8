package store

import (
	"context"
	"fmt"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// idleLeaseStreams is how many keep-alive streams a renewer keeps open on one connection
// between renewals. etcd answers the renewals of one stream one after the other, each waiting
// until the member has applied everything it committed, so a renewal never waits for a busy
// stream: it opens another, which is kept afterwards if fewer than this many are idle.
const idleLeaseStreams = 64

// renewer renews leases one at a time over long-lived LeaseKeepAlive streams of one etcd
// client. clientv3's KeepAliveOnce opens a gRPC stream for every renewal; with a thousand
// cells heartbeating that is hundreds of stream set-ups a second on the BBS's connection.
// Each stream here carries one renewal at a time, so an answer needs no matching.
type renewer struct {
	client *clientv3.Client
	idle   chan *leaseStream
	open   atomic.Int64 // streams open, idle or busy
}

// leaseStream is one open keep-alive stream.
type leaseStream struct {
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

func newRenewer(client *clientv3.Client) *renewer {
	return &renewer{client: client, idle: make(chan *leaseStream, idleLeaseStreams)}
}

// errStream marks a failure of the keep-alive stream itself (not an answer about the lease):
// the renewal may be tried again another way.
type errStream struct{ err error }

func (e *errStream) Error() string { return "lease keep-alive stream: " + e.err.Error() }
func (e *errStream) Unwrap() error { return e.err }

// renew renews lease id once and returns its new TTL in seconds. Errors:
// rpctypes.ErrLeaseNotFound when the lease no longer exists, *errStream when the stream
// failed, the context's error when ctx ended.
func (r *renewer) renew(ctx context.Context, id clientv3.LeaseID) (int64, error) {
	if r.client.ActiveConnection() == nil {
		// An in-process client (an embedded member's) has no connection to keep streams on;
		// its keep-alive stream is a pair of channels, cheap to set up for each renewal.
		resp, err := r.client.KeepAliveOnce(ctx, id)
		if err != nil {
			return 0, err
		}
		return resp.TTL, nil
	}
	ls, err := r.take(ctx)
	if err != nil {
		return 0, err
	}
	// Should ctx end during the exchange the stream is closed, which ends Recv; it is then
	// dropped, as a stream whose answer is still on its way cannot carry another renewal.
	stop := context.AfterFunc(ctx, ls.cancel)
	resp, err := ls.exchange(id)
	stopped := stop()
	if err != nil || !stopped {
		r.drop(ls)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err == nil {
			err = context.Canceled
		}
		return 0, &errStream{err}
	}
	r.put(ls)
	if resp.TTL <= 0 {
		return 0, rpctypes.ErrLeaseNotFound
	}
	return resp.TTL, nil
}

func (ls *leaseStream) exchange(id clientv3.LeaseID) (*pb.LeaseKeepAliveResponse, error) {
	if err := ls.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		return nil, err
	}
	return ls.stream.Recv()
}

// take returns an idle stream, or opens one when none is idle. The stream outlives ctx, but
// opening it does not: clientv3 waits for a ready connection, which may take long.
func (r *renewer) take(ctx context.Context) (*leaseStream, error) {
	select {
	case ls := <-r.idle:
		return ls, nil
	default:
	}
	// Like clientv3's own keep-alives the stream requires a leader, so a member cut off from
	// the cluster refuses at once.
	sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	stop := context.AfterFunc(ctx, cancel)
	stream, err := pb.NewLeaseClient(r.client.ActiveConnection()).LeaseKeepAlive(sctx)
	if !stop() {
		err = ctx.Err() // ctx ended while the stream was being opened: it is cancelled
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &errStream{fmt.Errorf("open: %w", err)}
	}
	r.open.Add(1)
	return &leaseStream{stream: stream, cancel: cancel}, nil
}

// put keeps a stream for the next renewal, or closes it when enough are idle.
func (r *renewer) put(ls *leaseStream) {
	select {
	case r.idle <- ls:
	default:
		r.drop(ls)
	}
}

// drop closes a stream.
func (r *renewer) drop(ls *leaseStream) {
	ls.cancel()
	r.open.Add(-1)
}
