package brain

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-run/trellis/brain/auction"
)

// metrics are the brain's Prometheus collectors.
type metrics struct {
	auctionDuration  prometheus.Histogram
	auctionBatch     prometheus.Histogram
	writeBatch       prometheus.Histogram
	placements       *prometheus.CounterVec
	placementErrors  *prometheus.CounterVec
	lrpsMissing      prometheus.Gauge
	lrpsExtra        prometheus.Gauge
	convergeDuration *prometheus.HistogramVec
	convergePlan     *prometheus.HistogramVec
	actions          *prometheus.CounterVec
	leader           prometheus.Gauge
	lockLosses       prometheus.Counter
	events           prometheus.Counter
	resyncs          *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "trellis", "brain"
	m := &metrics{
		auctionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "auction_duration_seconds",
			Help:    "Time to decide one auction batch (reading the cells and placing, not the BBS writes).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		auctionBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "auction_batch_size",
			Help:    "Instances and tasks in one auction batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		writeBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "write_batch_size",
			Help:    "Instance writes (placements and convergence actions) sent to the BBS in one request.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100},
		}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "placements_total",
			Help: "Placements written to the BBS, by kind (lrp, task).",
		}, []string{"kind"}),
		placementErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "placement_errors_total",
			Help: "Work the auction could not place, by kind (lrp, task) and reason (rootfs, placement_tags, resources).",
		}, []string{"kind", "reason"}),
		lrpsMissing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "lrps_missing",
			Help: "Desired instances without an ActualLRP at the last convergence.",
		}),
		lrpsExtra: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "lrps_extra",
			Help: "ActualLRPs beyond their desired instances, or orphaned, at the last convergence.",
		}),
		convergePlan: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "convergence_plan_seconds",
			Help: "Time to plan one convergence from the view (snapshot and plan, not the BBS writes), " +
				"by scope: full (every process: the sweep, deadlines, cell changes) or processes (those whose records changed).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"scope"}),
		convergeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "convergence_duration_seconds",
			Help:    "Time of one convergence: planning and applying its actions, by scope (full, processes).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"scope"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "convergence_actions_total",
			Help: "Converger actions applied, by action and result (ok, conflict, error).",
		}, []string{"action", "result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "leader",
			Help: "1 while this brain holds the lock and acts, 0 while it stands by.",
		}),
		lockLosses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "lock_losses_total",
			Help: "Times this brain stopped leading because it could not renew the lock.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_total",
			Help: "BBS events applied to the leader's view.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "resyncs_total",
			Help: "Full reads of the BBS, by cause (leader, compacted, stream-error).",
		}, []string{"cause"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.auctionDuration, m.auctionBatch, m.writeBatch, m.placements,
		m.placementErrors, m.lrpsMissing, m.lrpsExtra, m.convergeDuration, m.convergePlan, m.actions, m.leader,
		m.lockLosses, m.events, m.resyncs} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("brain: metrics are already registered in this registry (one brain per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

// placementReason is the label of a placement error.
func placementReason(err error) string {
	switch {
	case errors.Is(err, auction.ErrNoRootFSMatch):
		return "rootfs"
	case errors.Is(err, auction.ErrNoPlacementTagsMatch):
		return "placement_tags"
	case errors.Is(err, auction.ErrInsufficientResources):
		return "resources"
	}
	return "other"
}
