package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ClientOptions tune ClientConfig. Exactly one of ServerIDs and ServerName
// must be set.
type ClientOptions struct {
	// Roots are the trust anchors for the server's chain. When empty, the
	// roots of Cert's current certificate are used at each handshake.
	Roots []*x509.Certificate
	// RootsFrom, when set, is called at each handshake for the trust
	// anchors (for example a reloaded root file); it takes precedence over
	// Roots and Cert's roots.
	RootsFrom func() []*x509.Certificate
	// Cert, when set, supplies the client certificate (none is sent while
	// the holder is empty).
	Cert *Holder
	// ServerIDs are the SPIFFE IDs the server may present; the server leaf
	// must be a valid X.509-SVID with one of them. No SNI is sent.
	ServerIDs []spiffeid.ID
	// ServerName is the DNS name (or IP literal) the server certificate must
	// carry; it is also sent as SNI. Used for the controller's endpoint.
	ServerName string
	// NextProtos is the ALPN list; empty means ["h2"].
	NextProtos []string
}

// ClientConfig returns a TLS 1.3 client configuration that verifies the
// server's chain against the roots and checks the server's identity as the
// options say. Standard name verification is replaced by that check
// (InsecureSkipVerify is set, with the verification done in
// VerifyConnection), so it also runs on resumed sessions.
func ClientConfig(opts ClientOptions) (*tls.Config, error) {
	if len(opts.ServerIDs) == 0 && opts.ServerName == "" {
		return nil, errors.New("mtls: client config needs ServerIDs or ServerName")
	}
	if len(opts.ServerIDs) != 0 && opts.ServerName != "" {
		return nil, errors.New("mtls: client config takes ServerIDs or ServerName, not both")
	}
	if len(opts.Roots) == 0 && opts.RootsFrom == nil && opts.Cert == nil {
		return nil, errors.New("mtls: client config needs Roots, RootsFrom or a certificate holder to take roots from")
	}
	for _, id := range opts.ServerIDs {
		if id.IsZero() {
			return nil, errors.New("mtls: empty server SPIFFE ID")
		}
	}
	protos := opts.NextProtos
	if len(protos) == 0 {
		protos = defaultNextProtos
	}
	staticRoots := append([]*x509.Certificate(nil), opts.Roots...)
	allowed := append([]spiffeid.ID(nil), opts.ServerIDs...)
	serverName := opts.ServerName
	holder := opts.Cert

	rootsFrom := opts.RootsFrom
	roots := func() ([]*x509.Certificate, error) {
		if rootsFrom != nil {
			if rs := rootsFrom(); len(rs) != 0 {
				return rs, nil
			}
			return nil, errors.New("mtls: no trust anchors available")
		}
		if len(staticRoots) != 0 {
			return staticRoots, nil
		}
		if c := holder.Load(); c != nil {
			return c.Roots(), nil
		}
		return nil, errors.New("mtls: no trust anchors available yet")
	}

	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("mtls: server presented no certificate")
		}
		rs, err := roots()
		if err != nil {
			return err
		}
		if len(allowed) != 0 {
			return verifySPIFFE(cs.PeerCertificates, rs, allowed)
		}
		return verifyDNS(cs.PeerCertificates, rs, serverName)
	}

	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         append([]string(nil), protos...),
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection:   verify,
	}
	if serverName != "" {
		cfg.ServerName = serverName
	}
	if holder != nil {
		cfg.GetClientCertificate = holder.GetClientCertificate
	}
	return cfg, nil
}

func verifySPIFFE(certs, roots []*x509.Certificate, allowed []spiffeid.ID) error {
	var bundles []*x509bundle.Bundle
	seen := map[spiffeid.TrustDomain]bool{}
	for _, id := range allowed {
		td := id.TrustDomain()
		if !seen[td] {
			seen[td] = true
			bundles = append(bundles, x509bundle.FromX509Authorities(td, roots))
		}
	}
	id, _, err := x509svid.Verify(certs, x509bundle.NewSet(bundles...))
	if err != nil {
		return fmt.Errorf("mtls: server certificate: %w", err)
	}
	if !slices.Contains(allowed, id) {
		return fmt.Errorf("mtls: server identity %q is not one of the expected %v", id, allowed)
	}
	return nil
}

func verifyDNS(certs, roots []*x509.Certificate, name string) error {
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         rootPool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("mtls: server certificate for %q: %w", name, err)
	}
	return nil
}
