package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// File names inside the CA directory. The self-signed layout is
// RootCertFile + RootKeyFile; Istio's plugged-in CA layout ("cacerts") is
// CACertFile + CAKeyFile + CertChainFile + RootCertFile.
const (
	RootCertFile  = "root-cert.pem"
	RootKeyFile   = "root-key.pem"
	CACertFile    = "ca-cert.pem"
	CAKeyFile     = "ca-key.pem"
	CertChainFile = "cert-chain.pem"
)

// LoadOptions tune LoadOrCreate.
type LoadOptions struct {
	// TrustDomain names a generated root (CN and O). Required.
	TrustDomain string
	// RootValidity is the lifetime of a generated root (DefaultRootValidity
	// when zero).
	RootValidity time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger receives one line saying which material was used.
	Logger *slog.Logger
}

// LoadOrCreate returns validated signing material from dir:
//   - if ca-cert.pem or ca-key.pem exists, the plugged-in CA layout is
//     loaded (see LoadPlugged);
//   - else if root-cert.pem exists, the self-signed root is loaded (a
//     missing root-key.pem is an error);
//   - else a root is generated and written, creating dir if needed:
//     root-key.pem (mode 0600) first, then root-cert.pem (0644), each
//     atomically. A root-key.pem left without a certificate by an
//     interrupted first start is replaced.
//
// Only one process may create the root in a directory; later starts load it.
func LoadOrCreate(dir string, opts LoadOptions) (*SigningMaterial, error) {
	if dir == "" {
		return nil, errors.New("ca: empty CA directory")
	}
	if opts.TrustDomain == "" {
		return nil, errors.New("ca: empty trust domain")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	plugged, err := anyExists(dir, CACertFile, CAKeyFile)
	if err != nil {
		return nil, err
	}
	if plugged {
		m, err := LoadPlugged(dir, now())
		if err != nil {
			return nil, err
		}
		logger.Info("loaded plugged-in CA", "dir", dir, "signer", m.Cert.Subject.String(), "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	}
	certExists, err := anyExists(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	if certExists {
		m, err := LoadSelfSigned(dir, now())
		if err != nil {
			return nil, err
		}
		logger.Info("loaded self-signed root", "dir", dir, "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	}
	keyExists, err := anyExists(dir, RootKeyFile)
	if err != nil {
		return nil, err
	}
	if keyExists {
		// The key is written before the certificate, so a key without a
		// certificate is a first start that did not finish: nobody can
		// trust a root that was never written, and generating anew is safe.
		logger.Warn("root key without root certificate, generating a new root", "dir", dir)
	}
	m, err := GenerateRoot(opts.TrustDomain, opts.RootValidity, now())
	if err != nil {
		return nil, err
	}
	if err := WriteSelfSigned(dir, m); err != nil {
		return nil, err
	}
	logger.Info("generated self-signed root", "dir", dir, "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
	return m, nil
}

// LoadSelfSigned reads root-cert.pem and root-key.pem from dir and
// validates them at time now.
func LoadSelfSigned(dir string, now time.Time) (*SigningMaterial, error) {
	certs, err := readCerts(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("ca: %s: want exactly one certificate, found %d", filepath.Join(dir, RootCertFile), len(certs))
	}
	key, err := readKey(dir, RootKeyFile)
	if err != nil {
		return nil, err
	}
	m := &SigningMaterial{Key: key, Cert: certs[0], Root: certs[0]}
	if err := m.Validate(now); err != nil {
		return nil, fmt.Errorf("ca: self-signed root in %s: %w", dir, err)
	}
	return m, nil
}

// LoadPlugged reads Istio's plugged-in CA layout from dir and validates it
// at time now: ca-cert.pem (the signing certificate), ca-key.pem (its key),
// root-cert.pem (the root; when it holds several, the one the chain verifies
// to is used) and optionally cert-chain.pem (the chain from ca-cert.pem
// upwards; ca-cert.pem itself and root certificates found in it are
// skipped, the rest are the intermediates).
func LoadPlugged(dir string, now time.Time) (*SigningMaterial, error) {
	caCerts, err := readCerts(dir, CACertFile)
	if err != nil {
		return nil, err
	}
	key, err := readKey(dir, CAKeyFile)
	if err != nil {
		return nil, err
	}
	roots, err := readCerts(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	if _, err := os.Stat(filepath.Join(dir, CertChainFile)); err == nil {
		if chain, err = readCerts(dir, CertChainFile); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ca: %w", err)
	}
	m, err := assemblePlugged(caCerts, key, roots, chain, now)
	if err != nil {
		return nil, fmt.Errorf("ca: plugged-in CA in %s: %w", dir, err)
	}
	return m, nil
}

// assemblePlugged builds and validates plugged-in CA material from the
// parsed ca-cert.pem (signing certificate first), ca-key.pem, root-cert.pem
// and cert-chain.pem (see LoadPlugged).
func assemblePlugged(caCerts []*x509.Certificate, key crypto.Signer, roots, chain []*x509.Certificate, now time.Time) (*SigningMaterial, error) {
	if len(caCerts) == 0 || len(roots) == 0 {
		return nil, errors.New("ca: plugged-in CA needs a signing certificate and a root")
	}
	signer := caCerts[0]
	var inter []*x509.Certificate
	for _, c := range append(caCerts[1:], chain...) {
		if c.Equal(signer) || containsCert(roots, c) || containsCert(inter, c) {
			continue
		}
		inter = append(inter, c)
	}
	m := &SigningMaterial{Key: key, Cert: signer, Intermediates: inter, Root: roots[0], Bundle: roots, Plugged: true}
	if len(roots) > 1 {
		// Pick the root the signing certificate actually chains to.
		for _, r := range roots {
			cand := *m
			cand.Root = r
			if cand.Validate(now) == nil {
				m = &cand
				break
			}
		}
	}
	if err := m.Validate(now); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteSelfSigned writes a self-signed root's key (mode 0600) and
// certificate to dir, each atomically (temporary file, fsync, rename).
func WriteSelfSigned(dir string, m *SigningMaterial) error {
	if m == nil || !m.SelfSigned() {
		return errors.New("ca: WriteSelfSigned needs self-signed material")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ca: create CA directory: %w", err)
	}
	keyPEM, err := mtls.EncodePrivateKeyPEM(m.Key)
	if err != nil {
		return fmt.Errorf("ca: encode root key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, RootKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, RootCertFile), mtls.EncodeCertificatesPEM(m.Root), 0o644)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		_ = f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func anyExists(dir string, names ...string) (bool, error) {
	for _, n := range names {
		_, err := os.Stat(filepath.Join(dir, n))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("ca: %w", err)
		}
	}
	return false, nil
}

func readCerts(dir, name string) ([]*x509.Certificate, error) {
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", path, err)
	}
	certs, err := mtls.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs, nil
}

func readKey(dir, name string) (crypto.Signer, error) {
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", path, err)
	}
	k, err := mtls.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return k, nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}
