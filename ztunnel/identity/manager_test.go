package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// testCA issues real X.509-SVIDs with a configurable lifetime and can be
// made unreachable.
type testCA struct {
	key     crypto.Signer
	root    *x509.Certificate
	ttl     time.Duration
	down    atomic.Bool
	fetches atomic.Int32
	serial  atomic.Int64
}

func newTestCA(t *testing.T, ttl time.Duration) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &testCA{key: key, root: root, ttl: ttl}
}

var errCADown = errors.New("CA unreachable")

func (c *testCA) Fetch(ctx context.Context, req caclient.Request) (*mtls.Certificate, error) {
	c.fetches.Add(1)
	if c.down.Load() {
		return nil, errCADown
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(req.Identity.String())
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(c.serial.Add(1) + 1),
		// Backdated like the real CA: renewal must not rely on NotBefore.
		// X.509 times have one-second resolution: round up, never down.
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(c.ttl).Truncate(time.Second).Add(time.Second),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, key.Public(), c.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return mtls.NewCertificate(key, []*x509.Certificate{leaf}, []*x509.Certificate{c.root})
}

var sleepID = spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/sleep")

func newManager(t *testing.T, ca *testCA) *Manager {
	t.Helper()
	m, err := New(Options{Fetcher: ca, RetryInitial: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func wait(t *testing.T, m *Manager, id spiffeid.ID) *mtls.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cert, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestFetchesAcquiredIdentity(t *testing.T) {
	m := newManager(t, newTestCA(t, time.Hour))
	if _, err := m.Certificate(sleepID); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("unacquired identity: %v", err)
	}
	m.Acquire(sleepID)
	cert := wait(t, m, sleepID)
	if got := cert.Leaf().URIs[0].String(); got != sleepID.String() {
		t.Errorf("certificate for %s", got)
	}
	if c, err := m.Certificate(sleepID); err != nil || c != cert {
		t.Errorf("Certificate: %v", err)
	}
}

func TestRenewsAtHalfLife(t *testing.T) {
	ca := newTestCA(t, 600*time.Millisecond)
	m := newManager(t, ca)
	m.Acquire(sleepID)
	first := wait(t, m, sleepID)
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := m.Certificate(sleepID)
		if err == nil && c.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) != 0 {
			// Renewed before the first one expired.
			if time.Now().After(first.NotAfter()) {
				t.Errorf("renewed only after expiry")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never renewed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Backdated NotBefore must not cause a renewal storm.
	if n := ca.fetches.Load(); n > 5 {
		t.Errorf("%d fetches in under a few seconds", n)
	}
}

// TestKeepsCertificateWhileCAUnreachable: the old certificate stays in use
// until it expires, then the identity fails closed, then recovers.
func TestKeepsCertificateWhileCAUnreachable(t *testing.T) {
	ca := newTestCA(t, 1500*time.Millisecond)
	m := newManager(t, ca)
	m.Acquire(sleepID)
	cert := wait(t, m, sleepID)
	ca.down.Store(true)

	// Shortly before expiry, well past half life: renewal has been failing.
	time.Sleep(time.Until(cert.NotAfter()) - 200*time.Millisecond)
	if c, err := m.Certificate(sleepID); err != nil || c != cert {
		t.Fatalf("old certificate not kept while valid: %v", err)
	}
	if s := m.Snapshot(); len(s) != 1 || s[0].LastError == "" || !s[0].Valid {
		t.Errorf("snapshot %+v", s)
	}
	time.Sleep(time.Until(cert.NotAfter()) + 50*time.Millisecond)
	if _, err := m.Certificate(sleepID); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("expired certificate handed out: %v", err)
	}
	ca.down.Store(false)
	if c := wait(t, m, sleepID); c == cert {
		t.Error("no new certificate after the CA came back")
	}
}

func TestReleaseStopsRenewal(t *testing.T) {
	ca := newTestCA(t, 200*time.Millisecond)
	m := newManager(t, ca)
	m.Acquire(sleepID)
	m.Acquire(sleepID) // two pods of one service account
	wait(t, m, sleepID)
	m.Release(sleepID)
	if _, err := m.Certificate(sleepID); err != nil {
		t.Fatalf("released while a pod remains: %v", err)
	}
	m.Release(sleepID)
	if _, err := m.Certificate(sleepID); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("identity kept after its last pod: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	n := ca.fetches.Load()
	time.Sleep(400 * time.Millisecond)
	if got := ca.fetches.Load(); got != n {
		t.Errorf("fetching continued after release: %d -> %d", n, got)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	ca := newTestCA(t, time.Hour)
	ca.down.Store(true)
	m := newManager(t, ca)
	m.Acquire(sleepID)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := m.Wait(ctx, sleepID)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errCADown) {
		t.Fatalf("Wait: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	m := newManager(t, newTestCA(t, time.Hour))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				m.Acquire(sleepID)
				_, _ = m.Certificate(sleepID)
				_ = m.Snapshot()
				m.Release(sleepID)
			}
		}()
	}
	wg.Wait()
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: time.Minute} {
		got := backoff(time.Second, time.Minute, n)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(%d) = %v, want about %v", n, got, want)
		}
	}
}

// TestRenewsUntrustedAtOnce: a certificate that a new trust bundle does not
// accept (its root was retired) is renewed at once; one it accepts waits
// for its half life.
func TestRenewsUntrustedAtOnce(t *testing.T) {
	ca := newTestCA(t, time.Hour)
	m := newManager(t, ca)
	m.Acquire(sleepID)
	first := wait(t, m, sleepID)

	m.RenewUntrusted([]*x509.Certificate{newTestCA(t, time.Hour).root, ca.root})
	time.Sleep(100 * time.Millisecond)
	if n := ca.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches with the issuing root still trusted, want 1", n)
	}

	m.RenewUntrusted([]*x509.Certificate{newTestCA(t, time.Hour).root})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := m.Certificate(sleepID)
		if err == nil && c.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an untrusted certificate was not renewed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
