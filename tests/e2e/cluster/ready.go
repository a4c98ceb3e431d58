package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// WaitReady polls url (a /healthz/ready endpoint) with client until it
// answers 200 or ctx ends; the error then carries the last answer.
func WaitReady(ctx context.Context, client *http.Client, url string) error {
	var last error
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitProcessReady is WaitReady for a URL that p serves: it stops waiting
// as soon as p exits, and then reports how it exited and the end of its
// log, so a process that failed at start-up is not waited for in vain.
// A nil p (a server running in this process) makes it WaitReady.
func WaitProcessReady(ctx context.Context, p *Process, client *http.Client, url string) error {
	if p == nil {
		return WaitReady(ctx, client, url)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	err := WaitReady(ctx, client, url)
	exited, werr := p.Exited()
	switch {
	case err == nil || !exited:
		return err
	case werr != nil:
		return fmt.Errorf("%s exited before it was ready: %w: %s", p.Name(), werr, LastLines(p.Log(), 5))
	}
	return fmt.Errorf("%s exited (status 0) before it was ready: %s", p.Name(), LastLines(p.Log(), 5))
}

// LastLines returns the last n lines of s on one line, separated by " | "
// (for error messages quoting a process's output).
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
