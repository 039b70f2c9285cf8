package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// While its metrics are being asked for, the agent samples its containers' usage every
// metricsInterval, so that a CPU percentage (a rate) is ready when asked for. It stops
// metricsIdle after the last request: sampling every container of a cell every 5 s whether or
// not anyone looks was 5% of the CPU of the scale simulator's cell processes (and on Linux each
// sample reads every container's state record and cgroup files). A request while the sampler is
// idle samples twice, metricsWarmup apart, and answers the CPU percentage over that time.
const (
	metricsInterval = 5 * time.Second
	metricsIdle     = 2 * time.Minute
	metricsWarmup   = time.Second
)

// InstanceMetrics are one container's usage as GET /v1/metrics reports it.
type InstanceMetrics struct {
	Handle       string `json:"handle"`
	Kind         string `json:"kind"`
	ProcessGuid  string `json:"process_guid,omitempty"`
	Index        int32  `json:"index"`
	InstanceGuid string `json:"instance_guid,omitempty"`
	TaskGuid     string `json:"task_guid,omitempty"`
	// Phase is the container's ContainerStatus.Phase: while its image is pulled it is listed
	// with this and no figures.
	Phase string `json:"phase,omitempty"`
	models.ContainerMetrics
}

// metricsSampler keeps the last two BulkMetrics samples of every container.
type metricsSampler struct {
	backend isolation.Backend
	handles func() []string
	// interval, idle and warmup are metricsInterval, metricsIdle and metricsWarmup (tests
	// shorten them).
	interval, idle, warmup time.Duration
	asked                  atomic.Int64 // when metrics were last asked for (unix nanoseconds; 0: never)

	mu   sync.Mutex
	prev map[string]isolation.Metrics
	last map[string]isolation.Metrics
}

func newMetricsSampler(b isolation.Backend) *metricsSampler {
	return &metricsSampler{backend: b, interval: metricsInterval, idle: metricsIdle, warmup: metricsWarmup,
		prev: map[string]isolation.Metrics{}, last: map[string]isolation.Metrics{}}
}

// loop samples every interval while metrics are being asked for (see warm), until ctx ends.
func (m *metricsSampler) loop(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.warm() {
			m.sample(ctx)
		} else {
			m.reset()
		}
	}
}

// warm reports whether metrics were asked for within the last idle period.
func (m *metricsSampler) warm() bool {
	at := m.asked.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < m.idle
}

// reset forgets the samples: once idle, they would only grow stale.
func (m *metricsSampler) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.prev)
	clear(m.last)
}

// current samples now and marks the metrics asked for; when the sampler was idle it samples
// first warmup earlier, so that CPU percentages are a rate over that time. Errors: the
// backend's, or ctx's.
func (m *metricsSampler) current(ctx context.Context) error {
	cold := !m.warm()
	m.asked.Store(time.Now().UnixNano())
	if cold {
		if err := m.sample(ctx); err != nil {
			return err
		}
		if !sleepCtx(ctx, m.warmup) {
			return ctx.Err()
		}
	}
	return m.sample(ctx)
}

// sample takes a new sample of every live container; the previous one is kept for rates.
func (m *metricsSampler) sample(ctx context.Context) error {
	if m.handles == nil {
		return nil
	}
	handles := m.handles()
	got, err := m.backend.BulkMetrics(ctx, handles)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, cur := range got {
		if cur.At.IsZero() {
			cur.At = time.Now()
		}
		if old, ok := m.last[h]; ok && cur.At.Sub(old.At) >= 100*time.Millisecond {
			m.prev[h] = old
		}
		m.last[h] = cur
	}
	for h := range m.last {
		if _, ok := got[h]; !ok {
			delete(m.last, h)
			delete(m.prev, h)
		}
	}
	return nil
}

// get returns the usage of handle: its last sample, with the CPU percentage over the interval
// since the previous one (0 with a single sample).
func (m *metricsSampler) get(handle string) (models.ContainerMetrics, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.last[handle]
	if !ok {
		return models.ContainerMetrics{}, false
	}
	out := models.ContainerMetrics{
		MemoryBytes: cur.MemoryBytes, MemoryLimitBytes: cur.MemoryLimitBytes,
		DiskBytes: cur.DiskBytes, DiskLimitBytes: cur.DiskLimitBytes, At: cur.At.UnixNano(),
	}
	if old, ok := m.prev[handle]; ok && cur.CPUNanos >= old.CPUNanos {
		if dt := cur.At.Sub(old.At); dt > 0 {
			out.CPUPercent = 100 * float64(cur.CPUNanos-old.CPUNanos) / float64(dt.Nanoseconds())
		}
	}
	return out, true
}

// Metrics samples the containers now and returns each one's usage. When metrics were not
// asked for in the last two minutes it takes a second longer (see metricsIdle).
func (a *Agent) Metrics(ctx context.Context) ([]InstanceMetrics, error) {
	if err := a.metrics.current(ctx); err != nil {
		return nil, err
	}
	var out []InstanceMetrics
	for _, s := range a.Containers() {
		m, ok := a.metrics.get(s.Handle)
		if !ok && s.Phase == "" {
			continue
		}
		out = append(out, InstanceMetrics{Handle: s.Handle, Kind: s.Kind, ProcessGuid: s.ProcessGuid, Index: s.Index,
			InstanceGuid: s.InstanceGuid, TaskGuid: s.TaskGuid, Phase: s.Phase, ContainerMetrics: m})
	}
	return out, nil
}
