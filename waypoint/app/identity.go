package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// errNoCertificate is returned while the waypoint holds no valid certificate.
var errNoCertificate = errors.New("waypoint: no valid certificate")

// identity keeps the waypoint's own certificate: fetched from the CA with
// the waypoint's token (no impersonation), renewed at half life, retried
// with backoff, and never handed out once expired.
type identity struct {
	id    spiffeid.ID
	fetch Fetcher
	log   *slog.Logger
	cur   atomic.Pointer[mtls.Certificate]
	// lastErr is why the latest fetch failed, nil after a success.
	lastErr atomic.Pointer[error]
	// renewNow wakes run before its timer (see renewIfUntrusted); it must
	// be made with a buffer of one.
	renewNow chan struct{}
}

// renewIfUntrusted renews the certificate at once when roots, the mesh's
// trust anchors as they changed, no longer accept it (a root rotation
// retired its root): peers would refuse it until its normal renewal.
func (i *identity) renewIfUntrusted(roots []*x509.Certificate) {
	c := i.cur.Load()
	if c == nil || c.VerifyWith(roots, time.Now()) == nil {
		return
	}
	select {
	case i.renewNow <- struct{}{}:
	default:
	}
}

// run renews until ctx ends.
func (i *identity) run(ctx context.Context) {
	fail := 0
	for {
		var wait time.Duration
		cert, err := i.fetch.Fetch(ctx, caclient.Request{Identity: i.id})
		if err != nil {
			i.lastErr.Store(&err)
			fail++
			wait = min(time.Second<<min(fail, 6), time.Minute)
			wait = wait/2 + rand.N(wait/2)
			i.log.Warn("certificate fetch failed", "identity", i.id.String(), "retry_in", wait, "err", err)
		} else {
			fail = 0
			i.lastErr.Store(nil)
			i.cur.Store(cert)
			life := cert.NotAfter().Sub(cert.NotBefore())
			wait = max(time.Until(cert.NotBefore().Add(life/2)), time.Second)
			i.log.Info("certificate obtained", "identity", i.id.String(), "expires", cert.NotAfter(), "renew_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-i.renewNow:
			t.Stop()
			i.log.Info("certificate no longer trusted by the mesh's trust anchors; renewing now", "identity", i.id.String())
		}
	}
}

// certificate returns the current certificate if still valid.
func (i *identity) certificate() (*tls.Certificate, error) {
	c := i.cur.Load()
	if c == nil || time.Now().After(c.NotAfter()) {
		if err := i.lastErr.Load(); err != nil {
			return nil, fmt.Errorf("%w (last fetch: %w)", errNoCertificate, *err)
		}
		return nil, errNoCertificate
	}
	return c.TLSCertificate(), nil
}

// status is the identity's state for the config dump.
func (i *identity) status() map[string]any {
	out := map[string]any{"identity": i.id.String()}
	if c := i.cur.Load(); c != nil {
		out["not_after"] = c.NotAfter()
		out["not_before"] = c.NotBefore()
	}
	if err := i.lastErr.Load(); err != nil {
		out["last_error"] = (*err).Error()
	}
	return out
}
