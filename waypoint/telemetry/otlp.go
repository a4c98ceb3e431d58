package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// SpanRecord is a finished span to export.
type SpanRecord struct {
	Span       Span
	Name       string
	Start, End time.Time
	Attributes map[string]string
	Error      bool
}

// Exporter sends sampled spans to an OTLP/HTTP endpoint (JSON encoding),
// in batches, from one background goroutine. When its queue is full spans
// are dropped rather than slowing requests down.
type Exporter struct {
	endpoint string
	service  string
	client   *http.Client
	log      *slog.Logger

	queue chan SpanRecord
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// NewExporter validates endpoint (e.g. http://collector:4318/v1/traces).
// service is the resource's service.name.
func NewExporter(endpoint, service string, log *slog.Logger) (*Exporter, error) {
	if endpoint == "" {
		return nil, fmt.Errorf("telemetry: empty OTLP endpoint")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter{endpoint: endpoint, service: service, client: &http.Client{Timeout: 5 * time.Second}, log: log,
		queue: make(chan SpanRecord, 4096), done: make(chan struct{})}, nil
}

// Start begins the export loop; Stop flushes and waits for it.
func (e *Exporter) Start() {
	e.wg.Add(1)
	go e.run()
}

// Stop flushes queued spans and ends the loop.
func (e *Exporter) Stop() {
	e.once.Do(func() { close(e.done) })
	e.wg.Wait()
}

// Export queues a sampled span; unsampled spans are ignored.
func (e *Exporter) Export(r SpanRecord) {
	if e == nil || r.Span.Flags&1 == 0 {
		return
	}
	select {
	case e.queue <- r:
	default:
	}
}

func (e *Exporter) run() {
	defer e.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var batch []SpanRecord
	flush := func() {
		if len(batch) > 0 {
			e.send(batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case r := <-e.queue:
			batch = append(batch, r)
			if len(batch) >= 256 {
				flush()
			}
		case <-t.C:
			flush()
		case <-e.done:
			for {
				select {
				case r := <-e.queue:
					batch = append(batch, r)
				default:
					flush()
					return
				}
			}
		}
	}
}

type kv struct {
	Key   string            `json:"key"`
	Value map[string]string `json:"value"`
}

func attrs(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{Key: k, Value: map[string]string{"stringValue": v}})
	}
	return out
}

func (e *Exporter) send(batch []SpanRecord) {
	spans := make([]map[string]any, 0, len(batch))
	for _, r := range batch {
		s := map[string]any{
			"traceId":           hex.EncodeToString(r.Span.TraceID[:]),
			"spanId":            hex.EncodeToString(r.Span.SpanID[:]),
			"name":              r.Name,
			"kind":              2, // SPAN_KIND_SERVER
			"startTimeUnixNano": strconv.FormatInt(r.Start.UnixNano(), 10),
			"endTimeUnixNano":   strconv.FormatInt(r.End.UnixNano(), 10),
			"attributes":        attrs(r.Attributes),
		}
		if r.Span.ParentID != ([8]byte{}) {
			s["parentSpanId"] = hex.EncodeToString(r.Span.ParentID[:])
		}
		if r.Error {
			s["status"] = map[string]any{"code": 2}
		}
		spans = append(spans, s)
	}
	body, err := json.Marshal(map[string]any{"resourceSpans": []any{map[string]any{
		"resource":   map[string]any{"attributes": attrs(map[string]string{"service.name": e.service})},
		"scopeSpans": []any{map[string]any{"scope": map[string]string{"name": "zmesh-waypoint"}, "spans": spans}},
	}}})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.endpoint, bytes.NewReader(body))
	if err != nil {
		e.log.Warn("otlp export failed", "err", err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		e.log.Warn("otlp export failed", "err", err)
		return
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e.log.Warn("otlp export rejected", "status", resp.StatusCode)
	}
}
