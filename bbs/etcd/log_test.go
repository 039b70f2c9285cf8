package etcd

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var shutdown atomic.Bool
	zl := newZapLogger(logger, slog.LevelWarn, &shutdown).With(zap.String("member", "m1"))

	zl.Info("chatty")
	zl.Warn("slow apply", zap.Int("took_ms", 120), zap.Strings("peers", []string{"a"}))
	shutdown.Store(true)
	zl.Error("server closed")

	out := buf.String()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"info below min level dropped", !strings.Contains(out, "chatty")},
		{"warn forwarded with fields in order", strings.Contains(out, `level=WARN msg="slow apply" member=m1 took_ms=120 peers=[a]`)},
		{"error while shutting down demoted and dropped", !strings.Contains(out, "server closed")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Fatalf("log output:\n%s", out)
			}
		})
	}
}
