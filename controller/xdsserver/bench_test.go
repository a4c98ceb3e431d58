package xdsserver_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

const (
	benchResources = 10_000
	benchClients   = 100
	benchTarget    = "Kubernetes//Pod/default/wl-4242"
)

// BenchmarkPodChangeFanout measures, per changed workload, the time from
// the controller's call until all 100 clients have applied the change,
// debounce included (default 15 ms quiet period).
func BenchmarkPodChangeFanout(b *testing.B) {
	b.Run("Upsert", func(b *testing.B) { benchFanout(b, false) })
	b.Run("Update", func(b *testing.B) { benchFanout(b, true) })
}

func benchFanout(b *testing.B, fullUpdate bool) {
	h := startServer(b, "127.0.0.1:0", xdsserver.Options{}, func(s *xdsserver.Server) {
		if err := s.Update(addressType, workloads(benchResources, 0)); err != nil {
			b.Fatal(err)
		}
	})
	applied := make(chan int, benchClients*4)
	handler := xds.HandlerFunc(func(d xds.Delta) []xds.Rejection {
		for _, u := range d.Upserts {
			if u.Name == benchTarget {
				rev, _ := strconv.Atoi(strings.TrimPrefix(u.Message.(*workloadapi.Address).GetWorkload().CanonicalRevision, "r"))
				applied <- rev
			}
		}
		return nil
	})
	clients := make([]*xds.Client, benchClients)
	for i := range clients {
		clients[i] = startClient(b, h.addr, handler, xds.Wildcard)
	}
	for _, c := range clients {
		waitSynced(b, c)
	}
	for range benchClients { // the initial state
		<-applied
	}

	var lat, upd []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rev := i + 1
		var state []xdsserver.Resource
		if fullUpdate { // fresh messages for everything, as a rebuilding index would hand over
			state = workloads(benchResources, 0)
			state[4242] = workload(benchTarget, ipFor(4242), rev)
		}
		start := time.Now()
		var err error
		if fullUpdate {
			err = h.srv.Update(addressType, state)
		} else {
			err = h.srv.Upsert(addressType, workload(benchTarget, ipFor(4242), rev))
		}
		if err != nil {
			b.Fatal(err)
		}
		upd = append(upd, time.Since(start))
		for seen := 0; seen < benchClients; {
			select {
			case got := <-applied:
				if got == rev {
					seen++
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("iteration %d: only %d clients applied the change", i, seen)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(upd)
	b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
	b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(ms(pct(upd, 50)), "update-p50-ms")
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkUpdate10k measures Update of 10,000 resources with one changed:
// with fresh messages (every one is encoded and hashed) and with the same
// pointers as last time (only the changed one is).
func BenchmarkUpdate10k(b *testing.B) {
	for _, fresh := range []bool{true, false} {
		b.Run(fmt.Sprintf("fresh=%v", fresh), func(b *testing.B) {
			h := startServer(b, "127.0.0.1:0", xdsserver.Options{}, nil)
			state := workloads(benchResources, 0)
			if err := h.srv.Update(addressType, state); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if fresh {
					state = workloads(benchResources, 0)
				}
				state[4242] = workload(benchTarget, ipFor(4242), i+1)
				b.StartTimer()
				if err := h.srv.Update(addressType, state); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
