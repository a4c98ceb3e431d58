// Package trustbundle keeps a trust domain's X.509 authorities loaded from
// a PEM file (the mesh root a proxy is given: Istio's istio-ca-root-cert
// ConfigMap, mounted as a file) and reloads them when the file changes. A
// root rotation (the file lists the old and new roots, later only the new)
// then reaches every handshake and every check of a CA response without a
// restart.
package trustbundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	zlog "github.com/zmesh/zmesh/pkg/log"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// DefaultInterval is how often Start re-reads the file.
const DefaultInterval = 10 * time.Second

// File is the trust anchors of one trust domain, read from a PEM file.
// Bundle and Authorities are safe for concurrent use and always hold the
// latest good content: a file that cannot be read or parsed, or holds no
// certificate, leaves the previous anchors in place.
type File struct {
	path   string
	log    *slog.Logger
	bundle *x509bundle.Bundle // updated in place, so holders see reloads

	mu      sync.Mutex // guards sum, lastErr (Reload's bookkeeping) and onChange
	sum     [sha256.Size]byte
	lastErr zlog.LastError
	// onChange are called, in order, after each reload that changed the
	// authorities.
	onChange []func()

	cancel context.CancelFunc
	done   chan struct{}
}

// Load reads path, which must hold at least one PEM certificate, as the
// authorities of td. log may be nil.
func Load(path string, td spiffeid.TrustDomain, log *slog.Logger) (*File, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if td.IsZero() {
		return nil, errors.New("trustbundle: empty trust domain")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trustbundle: %w", err)
	}
	certs, err := parse(path, data)
	if err != nil {
		return nil, err
	}
	return &File{path: path, log: log, bundle: x509bundle.FromX509Authorities(td, certs), sum: sha256.Sum256(data)}, nil
}

func parse(path string, data []byte) ([]*x509.Certificate, error) {
	certs, err := mtls.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("trustbundle: %s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("trustbundle: %s holds no certificate", path)
	}
	return certs, nil
}

// Bundle is the live bundle: its authorities change when the file does.
// Pass it as an x509bundle.Source.
func (f *File) Bundle() *x509bundle.Bundle { return f.bundle }

// Authorities returns the current authorities (a copy).
func (f *File) Authorities() []*x509.Certificate { return f.bundle.X509Authorities() }

// OnChange registers fn to be called after every reload that changes the
// authorities (from Start's goroutine, or Reload's caller), for example to
// renew certificates the new anchors no longer accept. fn must not call
// Reload.
func (f *File) OnChange(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = append(f.onChange, fn)
}

// Reload re-reads the file and reports whether the authorities changed. On
// an error the previous authorities stay.
func (f *File) Reload() (changed bool, err error) {
	changed, err = f.reload()
	if changed {
		f.mu.Lock()
		fns := f.onChange
		f.mu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
	return changed, err
}

func (f *File) reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("trustbundle: %w", err)
	}
	sum := sha256.Sum256(data)
	if sum == f.sum {
		return false, nil
	}
	certs, err := parse(f.path, data)
	if err != nil {
		return false, err
	}
	if eq(certs, f.bundle.X509Authorities()) {
		f.sum = sum
		return false, nil
	}
	f.bundle.SetX509Authorities(certs)
	f.sum = sum
	f.log.Info("trust anchors reloaded", "path", f.path, "authorities", len(certs))
	return true, nil
}

func eq(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

// Start re-reads the file every interval (DefaultInterval when zero) until
// Stop. A failing reload is logged once per distinct error.
func (f *File) Start(interval time.Duration) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := f.Reload()
			f.mu.Lock()
			report := f.lastErr.Changed(err)
			f.mu.Unlock()
			if report && err != nil {
				f.log.Warn("trust anchors not reloaded; keeping the current ones", "path", f.path, "error", err)
			}
		}
	}()
}

// Stop ends Start's reloading and waits for it. It is a no-op without
// Start.
func (f *File) Stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
}
