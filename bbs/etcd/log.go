package etcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger (what etcd logs through) that writes to logger at
// minLevel and above, so etcd's lines end up in the process's one structured log. While
// shutdown is true every line is demoted to debug: a closing etcd reports its own closed
// listeners as errors, which are expected then.
func newZapLogger(logger *slog.Logger, minLevel slog.Level, shutdown *atomic.Bool) *zap.Logger {
	if logger == nil {
		return zap.NewNop()
	}
	if shutdown == nil {
		shutdown = new(atomic.Bool)
	}
	return zap.New(&slogCore{logger: logger, min: minLevel, shutdown: shutdown})
}

// slogCore is a zapcore.Core that forwards entries to a slog.Logger.
type slogCore struct {
	logger   *slog.Logger
	min      slog.Level
	shutdown *atomic.Bool
	attrs    []slog.Attr
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c *slogCore) level(l zapcore.Level) slog.Level {
	if c.shutdown.Load() {
		return slog.LevelDebug
	}
	return slogLevel(l)
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	lvl := c.level(l)
	return lvl >= c.min && c.logger.Enabled(context.Background(), lvl)
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	attrs := make([]slog.Attr, 0, len(c.attrs)+len(fields))
	attrs = append(attrs, c.attrs...)
	attrs = append(attrs, fieldsToAttrs(fields)...)
	return &slogCore{logger: c.logger, min: c.min, shutdown: c.shutdown, attrs: attrs}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	attrs := make([]slog.Attr, 0, len(c.attrs)+len(fields)+1)
	attrs = append(attrs, c.attrs...)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	attrs = append(attrs, fieldsToAttrs(fields)...)
	c.logger.LogAttrs(context.Background(), c.level(e.Level), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// fieldsToAttrs encodes zap fields through zap's map encoder, which knows every field type,
// one field at a time so the attributes keep the fields' order.
func fieldsToAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		for k, v := range enc.Fields {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	return attrs
}
