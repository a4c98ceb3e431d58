package app

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

type failingFetcher struct{ err error }

func (f failingFetcher) Fetch(context.Context, caclient.Request) (*mtls.Certificate, error) {
	return nil, f.err
}

// TestIdentityReportsWhyItHasNoCertificate: while the CA refuses, the
// handshake error and the config dump say why.
func TestIdentityReportsWhyItHasNoCertificate(t *testing.T) {
	caErr := errors.New("ca says no")
	i := &identity{id: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint"), fetch: failingFetcher{caErr}, log: slog.New(slog.DiscardHandler)}
	if _, err := i.certificate(); !errors.Is(err, errNoCertificate) || errors.Is(err, caErr) {
		t.Fatalf("before any fetch: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for i.lastErr.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if _, err := i.certificate(); !errors.Is(err, errNoCertificate) || !errors.Is(err, caErr) {
		t.Fatalf("after a failed fetch: %v", err)
	}
	if got := i.status()["last_error"]; got != caErr.Error() {
		t.Fatalf("config dump last_error %v", got)
	}
}
