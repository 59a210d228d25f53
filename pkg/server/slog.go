package server

import (
	"context"
	"log/slog"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Slog returns a *slog.Logger that writes to a go-kit logger, for the Prometheus packages (TSDB, PromQL, web
// API) that take one. Levels map to go-kit levels, so --log.level filters them like the rest.
func Slog(l log.Logger) *slog.Logger {
	return slog.New(&slogHandler{logger: l})
}

type slogHandler struct {
	logger log.Logger
	attrs  []any
	group  string
}

func (h *slogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	kv := make([]any, 0, 2+len(h.attrs)+2*r.NumAttrs())
	kv = append(kv, "msg", r.Message)
	kv = append(kv, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		kv = append(kv, h.key(a.Key), a.Value.String())
		return true
	})
	l := h.logger
	switch {
	case r.Level >= slog.LevelError:
		l = level.Error(l)
	case r.Level >= slog.LevelWarn:
		l = level.Warn(l)
	case r.Level >= slog.LevelInfo:
		l = level.Info(l)
	default:
		l = level.Debug(l)
	}
	return l.Log(kv...)
}

func (h *slogHandler) key(k string) string {
	if h.group == "" {
		return k
	}
	return h.group + "." + k
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogHandler{logger: h.logger, group: h.group, attrs: append([]any{}, h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.key(a.Key), a.Value.String())
	}
	return n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{logger: h.logger, group: h.key(name), attrs: h.attrs}
}
