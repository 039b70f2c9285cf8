package command

import (
	"testing"
	"time"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/models"
)

func TestFormatLogLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tc := range []struct {
		line       agent.LogLine
		timestamps bool
		want       string
	}{
		{agent.LogLine{Index: 2, Source: "APP", Stream: "OUT", Text: "hello"}, false, "[APP/2] OUT hello"},
		{agent.LogLine{Index: -1, Source: "APP", Stream: "ERR", Text: "task line"}, false, "[APP] ERR task line"},
		{agent.LogLine{Index: 0, Source: "HEALTH", Stream: "OUT", Text: "healthy", Time: at}, true, "2026-01-02T03:04:05.000000006Z [HEALTH/0] OUT healthy"},
	} {
		if got := formatLogLine(tc.line, tc.timestamps); got != tc.want {
			t.Errorf("formatLogLine(%+v) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	cpu, mem, disk := usage(agent.InstanceMetrics{ContainerMetrics: models.ContainerMetrics{
		CPUPercent: 12.34, MemoryBytes: 3 << 19, MemoryLimitBytes: 64 << 20, DiskBytes: 10 << 20}}, true)
	if cpu != "12.3%" || mem != "1.5M/64M" || disk != "10.0M" {
		t.Fatalf("usage = %q %q %q", cpu, mem, disk)
	}
	if cpu, mem, disk := usage(agent.InstanceMetrics{}, false); cpu != "-" || mem != "-" || disk != "-" {
		t.Fatalf("usage of an unreachable agent = %q %q %q, want dashes", cpu, mem, disk)
	}
}
