package caclient

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// newCSR returns a PEM CSR signed by key with an empty subject and one URI
// SAN, id.
func newCSR(key *ecdsa.PrivateKey, id spiffeid.ID) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("caclient: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// verify checks the response chain (leaf first, root last; an element may
// hold several PEM certificates) and builds the Certificate.
func (c *Client) verify(key *ecdsa.PrivateKey, want spiffeid.ID, elems []string) (*mtls.Certificate, error) {
	if len(elems) < 2 {
		return nil, fmt.Errorf("chain has %d elements, want at least leaf and root", len(elems))
	}
	var chain []*x509.Certificate
	for i, e := range elems[:len(elems)-1] {
		certs, err := mtls.ParseCertificatesPEM([]byte(e))
		if err != nil {
			return nil, fmt.Errorf("chain element %d: %w", i, err)
		}
		chain = append(chain, certs...)
	}
	if _, err := mtls.ParseCertificatesPEM([]byte(elems[len(elems)-1])); err != nil {
		return nil, fmt.Errorf("root element: %w", err)
	}
	roots := c.opts.RootsFrom()
	if len(roots) == 0 {
		return nil, errors.New("no trust anchors")
	}
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(want.TrustDomain(), roots))
	if err != nil {
		return nil, err
	}
	if id != want {
		return nil, fmt.Errorf("issued for %q, want %q", id, want)
	}
	cert, err := mtls.NewCertificate(key, chain, roots)
	if err != nil {
		return nil, err
	}
	return cert, nil
}
