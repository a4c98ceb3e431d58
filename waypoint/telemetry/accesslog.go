package telemetry

import (
	"context"
	"io"
	"log/slog"
	"time"
)

// AccessLog writes one JSON line per request or connection.
type AccessLog struct{ l *slog.Logger }

// NewAccessLog logs to w; nil w disables the log.
func NewAccessLog(w io.Writer) *AccessLog {
	if w == nil {
		return nil
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
			return slog.Attr{}
		}
		return a
	}})
	return &AccessLog{l: slog.New(h)}
}

// Entry is one access log line.
type Entry struct {
	Start                                                   time.Time
	Method, Path, Protocol, Authority, UserAgent, RequestID string
	Code                                                    int
	Flags                                                   string
	Duration                                                time.Duration
	BytesReceived, BytesSent                                int64
	UpstreamCluster, UpstreamHost                           string
	SourceAddress, SourcePrincipal, DestinationService      string
	RouteName, TraceID                                      string
	ConnectionTermination                                   string
}

// Log writes e.
func (a *AccessLog) Log(e *Entry) {
	if a == nil {
		return
	}
	flags := e.Flags
	if flags == "" {
		flags = "-"
	}
	a.l.LogAttrs(context.Background(), slog.LevelInfo, "",
		slog.String("start_time", e.Start.UTC().Format(time.RFC3339Nano)),
		slog.String("method", e.Method),
		slog.String("path", e.Path),
		slog.String("protocol", e.Protocol),
		slog.String("authority", e.Authority),
		slog.Int("response_code", e.Code),
		slog.String("response_flags", flags),
		slog.Int64("duration", e.Duration.Milliseconds()),
		slog.Int64("bytes_received", e.BytesReceived),
		slog.Int64("bytes_sent", e.BytesSent),
		slog.String("upstream_cluster", e.UpstreamCluster),
		slog.String("upstream_host", e.UpstreamHost),
		slog.String("downstream_remote_address", e.SourceAddress),
		slog.String("source_principal", e.SourcePrincipal),
		slog.String("destination_service", e.DestinationService),
		slog.String("route_name", e.RouteName),
		slog.String("user_agent", e.UserAgent),
		slog.String("x_request_id", e.RequestID),
		slog.String("trace_id", e.TraceID),
	)
}
