package store

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseStreamsPerClient bounds the keep-alive streams a renewer keeps open on one connection,
// and so the renewals in flight on it. etcd answers the renewals of one stream one after the
// other, each waiting until the member has applied what it committed, so a single stream
// would queue every heartbeat of a busy BBS behind the slowest.
const leaseStreamsPerClient = 16

// renewer renews leases one at a time over long-lived LeaseKeepAlive streams of one etcd
// client. clientv3's KeepAliveOnce opens a gRPC stream for every renewal; with a thousand
// cells heartbeating that is hundreds of stream set-ups a second on the BBS's connection.
// Each stream here carries one renewal at a time, so an answer needs no matching.
type renewer struct {
	client *clientv3.Client
	idle   chan *leaseStream
	slots  chan struct{} // one per stream that exists or is being opened
}

// leaseStream is one open keep-alive stream.
type leaseStream struct {
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

func newRenewer(client *clientv3.Client) *renewer {
	return &renewer{
		client: client,
		idle:   make(chan *leaseStream, leaseStreamsPerClient),
		slots:  make(chan struct{}, leaseStreamsPerClient),
	}
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
	r.idle <- ls
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

// take returns an idle stream, opening one while fewer than leaseStreamsPerClient exist, or
// waits for one to come back.
func (r *renewer) take(ctx context.Context) (*leaseStream, error) {
	select {
	case ls := <-r.idle:
		return ls, nil
	default:
	}
	select {
	case ls := <-r.idle:
		return ls, nil
	case r.slots <- struct{}{}:
		ls, err := r.open()
		if err != nil {
			<-r.slots
			return nil, err
		}
		return ls, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open starts a stream that lives until it fails or is dropped. Like clientv3's own
// keep-alives it requires a leader, so a member cut off from the cluster refuses at once.
func (r *renewer) open() (*leaseStream, error) {
	sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	stream, err := pb.NewLeaseClient(r.client.ActiveConnection()).LeaseKeepAlive(sctx)
	if err != nil {
		cancel()
		return nil, &errStream{fmt.Errorf("open: %w", err)}
	}
	return &leaseStream{stream: stream, cancel: cancel}, nil
}

// drop closes a stream that failed or was interrupted and frees its slot.
func (r *renewer) drop(ls *leaseStream) {
	ls.cancel()
	<-r.slots
}
