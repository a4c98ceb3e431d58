package mtls

import (
	"crypto/tls"
	"errors"
	"sync/atomic"
)

// Holder holds the current Certificate of a server or client and hands it to
// crypto/tls on every handshake, so replacing it takes effect on the next
// connection without a restart. It is safe for concurrent use. The zero
// value is an empty holder.
type Holder struct {
	cur atomic.Pointer[Certificate]
}

// NewHolder returns a holder with an initial certificate (nil for empty).
func NewHolder(initial *Certificate) *Holder {
	h := &Holder{}
	if initial != nil {
		h.cur.Store(initial)
	}
	return h
}

// Store replaces the current certificate.
func (h *Holder) Store(c *Certificate) error {
	if c == nil {
		return errors.New("mtls: cannot store a nil certificate")
	}
	h.cur.Store(c)
	return nil
}

// Load returns the current certificate, or nil if none was stored yet.
func (h *Holder) Load() *Certificate { return h.cur.Load() }

// GetCertificate is a tls.Config.GetCertificate callback. It fails while the
// holder is empty.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := h.cur.Load()
	if c == nil {
		return nil, errors.New("mtls: no certificate available yet")
	}
	return c.TLSCertificate(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate callback. While
// the holder is empty it sends no certificate (the server decides whether
// that is acceptable).
func (h *Holder) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := h.cur.Load()
	if c == nil {
		return &tls.Certificate{}, nil
	}
	return c.TLSCertificate(), nil
}
