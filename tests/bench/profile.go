package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profiler fetches CPU profiles from the ztunnels' admin endpoints
// (/debug/pprof/profile) while a measurement runs, and from the
// waypoint's (inside its pod's network namespace) during the waypoint
// scenario. A nil profiler does nothing.
type profiler struct {
	dir    string
	admins map[string]string // ztunnel name -> admin host:port
	// waypoint is the waypoint's admin endpoint; zero until the waypoint
	// scenario sets it.
	waypoint adminEndpoint
}

// adminEndpoint is an admin host:port and the client that reaches it
// (nil: http.DefaultClient).
type adminEndpoint struct {
	addr   string
	client *http.Client
}

// during profiles every ztunnel for d while fn runs, writing
// <dir>/<label>-<ztunnel>.pprof, and returns fn's error. Profiling
// failures are reported through warn and do not fail the measurement.
func (p *profiler) during(ctx context.Context, label string, d time.Duration, warn func(error), fn func() error) error {
	if p == nil {
		return fn()
	}
	targets := map[string]adminEndpoint{}
	for name, admin := range p.admins {
		targets[name] = adminEndpoint{addr: admin}
	}
	return p.profile(ctx, label, d, targets, warn, fn)
}

// duringWaypoint profiles the waypoint's CPU for d while fn runs, writing
// <dir>/<label>-waypoint.pprof, and then saves its allocations since it
// started as <dir>/<label>-waypoint.allocs.pprof; it also saves a 2 s
// execution trace as <dir>/<label>-waypoint.trace.
func (p *profiler) duringWaypoint(ctx context.Context, label string, d time.Duration, warn func(error), fn func() error) error {
	if p == nil || p.waypoint.addr == "" {
		return fn()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// An execution trace shows where a burst's requests wait: on the
		// network, runnable behind other goroutines, or off CPU.
		secs := min(2, max(1, int(d/time.Second)))
		path := filepath.Join(p.dir, label+"-waypoint.trace")
		if err := fetch(ctx, p.waypoint, fmt.Sprintf("/debug/pprof/trace?seconds=%d", secs), d+30*time.Second, path); err != nil {
			warn(fmt.Errorf("execution trace of the waypoint during %s: %w", label, err))
		}
	})
	err := p.profile(ctx, label, d, map[string]adminEndpoint{"waypoint": p.waypoint}, warn, fn)
	wg.Wait()
	path := filepath.Join(p.dir, label+"-waypoint.allocs.pprof")
	if aerr := fetch(ctx, p.waypoint, "/debug/pprof/allocs", 30*time.Second, path); aerr != nil {
		warn(fmt.Errorf("allocs profile of the waypoint after %s: %w", label, aerr))
	}
	return err
}

func (p *profiler) profile(ctx context.Context, label string, d time.Duration, targets map[string]adminEndpoint, warn func(error), fn func() error) error {
	var wg sync.WaitGroup
	for name, admin := range targets {
		wg.Go(func() {
			path := filepath.Join(p.dir, fmt.Sprintf("%s-%s.pprof", label, name))
			if err := fetchProfile(ctx, admin, d, path); err != nil {
				warn(fmt.Errorf("profile %s during %s: %w", name, label, err))
			}
		})
	}
	err := fn()
	wg.Wait()
	return err
}

// snapshot saves every ztunnel's heap and goroutine profiles as
// <dir>/<label>-<ztunnel>.{heap,goroutine}.pprof.
func (p *profiler) snapshot(ctx context.Context, label string, warn func(error)) {
	for name, admin := range p.admins {
		for _, kind := range []string{"heap", "goroutine"} {
			path := filepath.Join(p.dir, fmt.Sprintf("%s-%s.%s.pprof", label, name, kind))
			if err := fetch(ctx, adminEndpoint{addr: admin}, "/debug/pprof/"+kind, 30*time.Second, path); err != nil {
				warn(fmt.Errorf("%s profile of %s during %s: %w", kind, name, label, err))
			}
		}
	}
}

func fetchProfile(ctx context.Context, admin adminEndpoint, d time.Duration, path string) error {
	secs := max(1, int(d/time.Second))
	return fetch(ctx, admin, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), d+30*time.Second, path)
}

// fetch GETs admin's urlPath into path.
func fetch(ctx context.Context, admin adminEndpoint, urlPath string, timeout time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin.addr+urlPath, nil)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	client := admin.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile request: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("profile file: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile download: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("profile file: %w", err)
	}
	return nil
}
