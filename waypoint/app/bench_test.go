package app_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/waypoint/app"
)

// benchRequests measures sequential keep-alive requests and reports p50/p99.
func benchRequests(b *testing.B, c *http.Client, url string) {
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durs[len(durs)*90/100].Microseconds()), "p90-µs")
	b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds()), "p99-µs")
}

// noAccessLog runs the waypoint as deployed by default, without an access
// log; the tests' log buffer would otherwise grow through a whole
// benchmark, and its copying would be measured.
func noAccessLog(c *app.Config) { c.AccessLog = nil }

// BenchmarkThroughWaypoint: client → HBONE → waypoint (L7) → HBONE → backend.
func BenchmarkThroughWaypoint(b *testing.B) {
	m, _, _ := reviewsMesh(b, noAccessLog)
	benchRequests(b, m.httpClient(reviewsVIP+":9080", false), "http://reviews:9080/")
}

// BenchmarkDirect is the baseline: client → HBONE → backend.
func BenchmarkDirect(b *testing.B) {
	m, v1, _ := reviewsMesh(b, noAccessLog)
	t := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return m.client.Dial(ctx, &hbone.DialRequest{NextHop: netip.MustParseAddrPort(v1.ln.Addr().String()), Authority: netip.MustParseAddrPort("10.244.1.1:8080"),
			SourceID: clientID, Certificate: func() (*tls.Certificate, error) { return m.clientC.TLSCertificate(), nil }, ExpectedIDs: []spiffeid.ID{v1.id}})
	}}
	defer t.CloseIdleConnections()
	benchRequests(b, &http.Client{Transport: t}, "http://reviews:9080/")
}

// BenchmarkThroughWaypointParallel drives the waypoint with 16 concurrent
// keep-alive connections (the bench's load shape), reporting requests per
// second of the whole in-process path.
func BenchmarkThroughWaypointParallel(b *testing.B) {
	m, _, _ := reviewsMesh(b, noAccessLog)
	c := m.httpClient(reviewsVIP+":9080", false)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	b.SetParallelism(8) // 8 x GOMAXPROCS(2) = 16 goroutines
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get("http://reviews:9080/")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
