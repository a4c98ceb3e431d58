package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	zlog "github.com/zmesh/zmesh/pkg/log"
)

// DefaultReloadInterval is how often a Reloader reads the plugged-in CA.
const DefaultReloadInterval = 10 * time.Second

// ReloaderOptions configure NewReloader.
type ReloaderOptions struct {
	// Load reads the plugged-in CA's current material, validated. Required.
	Load func(ctx context.Context) (*SigningMaterial, error)
	// Authority receives each new version. Required.
	Authority *Authority
	// OnChange, when set, is called after the Authority took a new version
	// (to reissue the serving certificate, republish the trust bundle).
	OnChange func(*SigningMaterial)
	// Interval between reads (DefaultReloadInterval when zero).
	Interval time.Duration
	// Logger (discarded when nil).
	Logger *slog.Logger
}

// Reloader follows a plugged-in CA (Istio's cacerts, as files or a
// Secret) while the controller runs, as istiod does: an operator rotating
// the intermediate or the root replaces its files, and every certificate
// issued afterwards is signed with the new material, while root-cert.pem
// (old and new roots during a root rotation) becomes the mesh's trust
// bundle. A version that cannot be read or is not valid is logged and
// ignored: the CA keeps signing with the last good one.
type Reloader struct {
	opts ReloaderOptions
	log  *slog.Logger
	// last is the fingerprint of the material the Authority holds, and
	// lastErr the problem last logged, so that a version that stays broken
	// is logged once. Only Check touches them; Check
	// calls must not overlap.
	last    [sha256.Size]byte
	lastErr zlog.LastError
}

// NewReloader validates opts; Run starts reading.
func NewReloader(opts ReloaderOptions) (*Reloader, error) {
	if opts.Load == nil || opts.Authority == nil {
		return nil, errors.New("ca: reloader needs Load and an Authority")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultReloadInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reloader{opts: opts, log: log, last: fingerprint(opts.Authority.Material())}, nil
}

// Run reads the material every interval until ctx ends.
func (r *Reloader) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check(ctx)
		}
	}
}

// Check reads the material once and hands a new valid version to the
// Authority. It reports whether the Authority changed.
func (r *Reloader) Check(ctx context.Context) bool {
	m, err := r.opts.Load(ctx)
	var fp [sha256.Size]byte
	if err == nil {
		if fp = fingerprint(m); fp == r.last {
			r.problem(nil)
			return false
		}
		err = r.opts.Authority.SetMaterial(m)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.problem(err)
		}
		return false
	}
	r.problem(nil)
	r.last = fp
	r.log.Info("plugged-in CA reloaded", "signer", m.Cert.Subject.String(), "root", m.Root.Subject.String(),
		"trustAnchors", len(m.Anchors()), "notAfter", m.NotAfter())
	if r.opts.OnChange != nil {
		r.opts.OnChange(m)
	}
	return true
}

// problem logs err unless it was the last one logged, and notes when a
// problem is gone (nil err).
func (r *Reloader) problem(err error) {
	switch {
	case !r.lastErr.Changed(err):
	case err == nil:
		r.log.Info("plugged-in CA readable and valid again")
	default:
		r.log.Error("plugged-in CA unreadable or invalid; still signing with the last good version", "error", err)
	}
}

// fingerprint identifies material by its certificates (the key must
// match the signing certificate, so it changes with it).
func fingerprint(m *SigningMaterial) [sha256.Size]byte {
	var b bytes.Buffer
	b.Write(m.Cert.Raw)
	for _, c := range m.Intermediates {
		b.WriteString("|i")
		b.Write(c.Raw)
	}
	b.WriteString("|r")
	b.Write(m.Root.Raw)
	for _, c := range m.Anchors() {
		b.WriteString("|a")
		b.Write(c.Raw)
	}
	return sha256.Sum256(b.Bytes())
}

// PluggedDirLoader reads a plugged-in CA from dir (see LoadPlugged).
func PluggedDirLoader(dir string) func(context.Context) (*SigningMaterial, error) {
	return func(context.Context) (*SigningMaterial, error) { return LoadPlugged(dir, time.Now()) }
}

// PluggedSecretLoader reads a plugged-in CA from the cacerts Secret of
// namespace (see PluggedFromSecret).
func PluggedSecretLoader(client kubernetes.Interface, namespace string) func(context.Context) (*SigningMaterial, error) {
	return func(ctx context.Context) (*SigningMaterial, error) {
		s, err := client.CoreV1().Secrets(namespace).Get(ctx, PluggedSecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("ca: get secret %s/%s: %w", namespace, PluggedSecretName, err)
		}
		return PluggedFromSecret(s, time.Now())
	}
}
