package agent

import (
	"context"
	"sync"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// metricsInterval is how often the agent samples its containers' usage, so that a CPU
// percentage (a rate) is ready when asked for.
const metricsInterval = 5 * time.Second

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

	mu   sync.Mutex
	prev map[string]isolation.Metrics
	last map[string]isolation.Metrics
}

func newMetricsSampler(b isolation.Backend) *metricsSampler {
	return &metricsSampler{backend: b, prev: map[string]isolation.Metrics{}, last: map[string]isolation.Metrics{}}
}

func (m *metricsSampler) loop(ctx context.Context) {
	t := time.NewTicker(metricsInterval)
	defer t.Stop()
	for {
		m.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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

// Metrics samples the containers now and returns each one's usage.
func (a *Agent) Metrics(ctx context.Context) ([]InstanceMetrics, error) {
	if err := a.metrics.sample(ctx); err != nil {
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
