package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// DefaultServingDNSNames returns the names in the controller's serving
// certificate when none are configured: Istio's istiod service name (so
// Istio clients find it), the zmesh service name and localhost.
func DefaultServingDNSNames() []string {
	return []string{
		"istiod.istio-system.svc",
		"zmesh-controller.istio-system.svc",
		"localhost",
	}
}

// Retry bounds for a failed renewal.
const (
	renewRetryMin = time.Second
	renewRetryMax = time.Minute
)

// ServingCertOptions configure NewServingCert.
type ServingCertOptions struct {
	// DNSNames for the certificate (DefaultServingDNSNames() when nil).
	DNSNames []string
	// IPs for the certificate (127.0.0.1 and ::1 when nil).
	IPs []net.IP
	// TTL of each certificate (the Authority's default TTL when zero).
	TTL time.Duration
	// Logger (discarded when nil).
	Logger *slog.Logger
}

// ServingCert keeps the controller's own :15012 certificate, issued by the
// Authority with a fresh ECDSA P-256 key, in an mtls.Holder and renews it at
// half its lifetime. A failed renewal is retried with backoff while the
// current certificate stays in place.
type ServingCert struct {
	ca     *Authority
	dns    []string
	ips    []net.IP
	ttl    time.Duration
	log    *slog.Logger
	holder *mtls.Holder
	// renew asks the renewal goroutine to reissue now (see Renew).
	renew chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewServingCert validates the options. The holder is empty until Start.
func NewServingCert(a *Authority, opts ServingCertOptions) (*ServingCert, error) {
	if a == nil {
		return nil, errors.New("ca: serving certificate needs an Authority")
	}
	s := &ServingCert{
		ca:     a,
		dns:    append([]string(nil), opts.DNSNames...),
		ips:    append([]net.IP(nil), opts.IPs...),
		ttl:    opts.TTL,
		log:    opts.Logger,
		holder: mtls.NewHolder(nil),
		renew:  make(chan struct{}, 1),
	}
	if opts.DNSNames == nil {
		s.dns = DefaultServingDNSNames()
	}
	if opts.IPs == nil {
		s.ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if len(s.dns) == 0 && len(s.ips) == 0 {
		return nil, errors.New("ca: serving certificate needs a DNS name or an IP")
	}
	for _, n := range s.dns {
		if n == "" {
			return nil, errors.New("ca: empty DNS name for the serving certificate")
		}
	}
	if s.ttl < 0 {
		return nil, fmt.Errorf("ca: negative serving certificate TTL %s", s.ttl)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Holder is the holder to build the server's tls.Config from
// (mtls.ServerConfig). It is empty until Start succeeds.
func (s *ServingCert) Holder() *mtls.Holder { return s.holder }

// Start issues the first certificate synchronously (returning its error) and
// then renews in a goroutine until ctx ends or Stop is called. Calling Start
// twice is an error.
func (s *ServingCert) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errors.New("ca: serving certificate already started")
	}
	cert, err := s.issue()
	if err != nil {
		return err
	}
	_ = s.holder.Store(cert)
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.run(ctx, cert)
	return nil
}

// Renew has the certificate reissued now, in the background, for example
// after the Authority's material changed. It never blocks.
func (s *ServingCert) Renew() {
	select {
	case s.renew <- struct{}{}:
	default:
	}
}

// Stop ends renewal and waits for the goroutine. Safe to call without Start
// and more than once.
func (s *ServingCert) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (s *ServingCert) run(ctx context.Context, cur *mtls.Certificate) {
	defer close(s.done)
	issuedAt := time.Now()
	retry := renewRetryMin
	timer := time.NewTimer(renewDelay(issuedAt, cur.NotAfter()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.renew:
			timer.Stop()
		}
		next, err := s.issue()
		if err != nil {
			s.log.Error("serving certificate renewal failed", "error", err, "retryIn", retry, "currentNotAfter", cur.NotAfter())
			timer.Reset(retry)
			retry = min(2*retry, renewRetryMax)
			continue
		}
		_ = s.holder.Store(next)
		cur, issuedAt, retry = next, time.Now(), renewRetryMin
		s.log.Info("serving certificate renewed", "serial", next.Leaf().SerialNumber.Text(16), "notAfter", next.NotAfter())
		timer.Reset(renewDelay(issuedAt, cur.NotAfter()))
	}
}

// renewDelay is half of the remaining lifetime measured from issuance.
func renewDelay(issuedAt, notAfter time.Time) time.Duration {
	return max(notAfter.Sub(issuedAt)/2, 0)
}

func (s *ServingCert) issue() (*mtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate key: %w", err)
	}
	chain, err := s.ca.IssueServing(key.Public(), s.dns, s.ips, s.ttl)
	if err != nil {
		return nil, fmt.Errorf("ca: issue serving certificate: %w", err)
	}
	// Client certificates are verified against the whole trust bundle,
	// so that peers holding certificates of an old root keep connecting
	// while the root is rotated.
	cert, err := mtls.NewCertificate(key, chain[:len(chain)-1], s.ca.Roots())
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	return cert, nil
}
