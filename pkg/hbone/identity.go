package hbone

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

// CertificateSource returns the local identity's certificate: leaf first,
// then any intermediates, with its private key. It is called on every TLS
// handshake, so a rotated certificate is used by new connections without
// restarting anything. It must be safe for concurrent use.
type CertificateSource func() (*tls.Certificate, error)

// alpnH2 is the only application protocol HBONE negotiates.
const alpnH2 = "h2"

// tls12Suites are the TLS 1.2 suites HBONE allows (AEAD/GCM only). TLS 1.3
// suites are not configurable in crypto/tls and are all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// verifySVID checks a peer chain against the bundle and returns the leaf's
// SPIFFE ID. The leaf must carry exactly one URI SAN that is a SPIFFE ID
// (x509svid enforces this) and must not be a CA.
func verifySVID(rawCerts [][]byte, bundle x509bundle.Source) (spiffeid.ID, error) {
	if len(rawCerts) == 0 {
		return spiffeid.ID{}, errors.New("peer presented no certificate")
	}
	id, _, err := x509svid.ParseAndVerify(rawCerts, bundle)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("verify peer SVID: %w", err)
	}
	return id, nil
}

// serverTLSConfig builds the server side of HBONE mTLS: a client certificate
// is required, must verify against bundle and must name an identity in td.
func serverTLSConfig(cert CertificateSource, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		NextProtos:   []string{alpnH2},
		ClientAuth:   tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := cert()
			if err != nil {
				return nil, fmt.Errorf("server certificate: %w", err)
			}
			return c, nil
		},
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if len(rawCerts) > 0 {
				leaf, err := x509.ParseCertificate(rawCerts[0])
				if err != nil {
					return fmt.Errorf("parse client certificate: %w", err)
				}
				id, err := x509svid.IDFromCert(leaf)
				if err != nil {
					return fmt.Errorf("client certificate identity: %w", err)
				}
				if !id.MemberOf(td) {
					return fmt.Errorf("client identity %s is not in trust domain %s", id, td)
				}
			}
			_, err := verifySVID(rawCerts, bundle)
			return err
		},
	}
}

// clientTLSConfig builds the client side of HBONE mTLS: no SNI, ALPN h2, our
// certificate on request, and the server leaf must verify against bundle and
// name one of expected.
func clientTLSConfig(cert CertificateSource, bundle x509bundle.Source, expected []spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		NextProtos:   []string{alpnH2},
		// Standard hostname verification does not apply to SPIFFE; the chain
		// and the identity are checked in VerifyPeerCertificate. An empty
		// ServerName means no SNI is sent.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := cert()
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			return c, nil
		},
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifySVID(rawCerts, bundle)
			if err != nil {
				return err
			}
			if !slices.Contains(expected, id) {
				return fmt.Errorf("server identity %s is not one of the expected %v", id, expected)
			}
			return nil
		},
	}
}

// peerID returns the verified SPIFFE ID of a completed handshake.
func peerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("peer identity: %w", err)
	}
	return id, nil
}
