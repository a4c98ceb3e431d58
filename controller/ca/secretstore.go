package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// Secrets that hold the CA on Kubernetes, with Istio's names and keys.
const (
	// PluggedSecretName is the Secret of an operator-supplied ("plugged-in")
	// CA: ca-cert.pem, ca-key.pem, root-cert.pem and optionally
	// cert-chain.pem, as in LoadPlugged.
	PluggedSecretName = "cacerts"
	// SelfSignedSecretName is the Secret of the self-signed root generated
	// on first start.
	SelfSignedSecretName = "istio-ca-secret"
	// SelfSignedSecretType is the Secret type Istio gives SelfSignedSecretName.
	SelfSignedSecretType corev1.SecretType = "istio.io/ca-root"
	// PrivateKeyFile is a key of SelfSignedSecretName that Istio writes
	// empty (with cert-chain.pem and root-cert.pem); only ca-cert.pem and
	// ca-key.pem carry the root.
	PrivateKeyFile = "key.pem"
)

// LoadOrCreateFromSecret is LoadOrCreate for a CA kept in Secrets of
// namespace:
//   - if Secret "cacerts" exists, it is the plugged-in CA (Istio's keys
//     ca-cert.pem, ca-key.pem, root-cert.pem, optional cert-chain.pem; see
//     LoadPlugged) and wins;
//   - else if Secret "istio-ca-secret" exists, its ca-cert.pem (one
//     self-signed CA certificate) and ca-key.pem are the root;
//   - else a root is generated and "istio-ca-secret" is created with
//     Istio's layout (type istio.io/ca-root; ca-cert.pem and ca-key.pem set,
//     cert-chain.pem, key.pem and root-cert.pem empty). When another replica
//     created it first (AlreadyExists), the winner's root is read and used,
//     so replicas starting together end with one root.
//
// A Secret that exists but does not hold valid material is an error and is
// never overwritten; so is any API error other than NotFound (a CA that
// cannot see "cacerts" must not create a competing root). The client needs
// get and create on secrets in namespace.
func LoadOrCreateFromSecret(ctx context.Context, client kubernetes.Interface, namespace string, opts LoadOptions) (*SigningMaterial, error) {
	if client == nil {
		return nil, errors.New("ca: nil Kubernetes client")
	}
	if namespace == "" {
		return nil, errors.New("ca: empty CA namespace")
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
	secrets := client.CoreV1().Secrets(namespace)

	plugged, err := secrets.Get(ctx, PluggedSecretName, metav1.GetOptions{})
	switch {
	case err == nil:
		m, err := PluggedFromSecret(plugged, now())
		if err != nil {
			return nil, err
		}
		logger.Info("loaded plugged-in CA", "secret", namespace+"/"+PluggedSecretName, "signer", m.Cert.Subject.String(), "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("ca: get secret %s/%s: %w", namespace, PluggedSecretName, err)
	}

	existing, err := secrets.Get(ctx, SelfSignedSecretName, metav1.GetOptions{})
	switch {
	case err == nil:
		m, err := SelfSignedFromSecret(existing, now())
		if err != nil {
			return nil, err
		}
		logger.Info("loaded self-signed root", "secret", namespace+"/"+SelfSignedSecretName, "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("ca: get secret %s/%s: %w", namespace, SelfSignedSecretName, err)
	}

	m, err := GenerateRoot(opts.TrustDomain, opts.RootValidity, now())
	if err != nil {
		return nil, err
	}
	secret, err := SelfSignedSecret(namespace, m)
	if err != nil {
		return nil, err
	}
	_, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
	switch {
	case err == nil:
		logger.Info("generated self-signed root", "secret", namespace+"/"+SelfSignedSecretName, "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race: use its root, never ours.
		winner, err := secrets.Get(ctx, SelfSignedSecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("ca: get secret %s/%s after losing the creation race: %w", namespace, SelfSignedSecretName, err)
		}
		m, err := SelfSignedFromSecret(winner, now())
		if err != nil {
			return nil, err
		}
		logger.Info("loaded self-signed root created by another replica", "secret", namespace+"/"+SelfSignedSecretName, "root", m.Root.Subject.String(), "notAfter", m.NotAfter())
		return m, nil
	default:
		return nil, fmt.Errorf("ca: create secret %s/%s: %w", namespace, SelfSignedSecretName, err)
	}
}

// PluggedFromSecret reads a plugged-in CA from a "cacerts" Secret (keys
// ca-cert.pem, ca-key.pem, root-cert.pem, optional cert-chain.pem; see
// LoadPlugged) and validates it at time now.
func PluggedFromSecret(s *corev1.Secret, now time.Time) (*SigningMaterial, error) {
	src := secretName(s)
	caCerts, err := secretCerts(s, CACertFile, true)
	if err != nil {
		return nil, err
	}
	key, err := secretKey(s, CAKeyFile)
	if err != nil {
		return nil, err
	}
	roots, err := secretCerts(s, RootCertFile, true)
	if err != nil {
		return nil, err
	}
	chain, err := secretCerts(s, CertChainFile, false)
	if err != nil {
		return nil, err
	}
	m, err := assemblePlugged(caCerts, key, roots, chain, now)
	if err != nil {
		return nil, fmt.Errorf("ca: plugged-in CA in secret %s: %w", src, err)
	}
	return m, nil
}

// SelfSignedFromSecret reads a self-signed root from an "istio-ca-secret"
// Secret (ca-cert.pem: exactly one self-signed CA certificate; ca-key.pem:
// its key) and validates it at time now.
func SelfSignedFromSecret(s *corev1.Secret, now time.Time) (*SigningMaterial, error) {
	certs, err := secretCerts(s, CACertFile, true)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("ca: secret %s key %s: want exactly one certificate, found %d", secretName(s), CACertFile, len(certs))
	}
	key, err := secretKey(s, CAKeyFile)
	if err != nil {
		return nil, err
	}
	m := &SigningMaterial{Key: key, Cert: certs[0], Root: certs[0]}
	if err := m.Validate(now); err != nil {
		return nil, fmt.Errorf("ca: self-signed root in secret %s: %w", secretName(s), err)
	}
	return m, nil
}

// SelfSignedSecret builds the "istio-ca-secret" Secret for self-signed
// material, in Istio's layout.
func SelfSignedSecret(namespace string, m *SigningMaterial) (*corev1.Secret, error) {
	if m == nil || !m.SelfSigned() {
		return nil, errors.New("ca: SelfSignedSecret needs self-signed material")
	}
	keyPEM, err := mtls.EncodePrivateKeyPEM(m.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode root key: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecretName, Namespace: namespace},
		Type:       SelfSignedSecretType,
		Data: map[string][]byte{
			CACertFile:     mtls.EncodeCertificatesPEM(m.Root),
			CAKeyFile:      keyPEM,
			CertChainFile:  {},
			PrivateKeyFile: {},
			RootCertFile:   {},
		},
	}, nil
}

func secretName(s *corev1.Secret) string {
	return s.Namespace + "/" + s.Name
}

// secretCerts parses the certificates under key; a missing or empty key is
// an error when required, else no certificates.
func secretCerts(s *corev1.Secret, key string, required bool) ([]*x509.Certificate, error) {
	data := s.Data[key]
	if len(data) == 0 {
		if required {
			return nil, fmt.Errorf("ca: secret %s: missing or empty key %s", secretName(s), key)
		}
		return nil, nil
	}
	certs, err := mtls.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: secret %s key %s: %w", secretName(s), key, err)
	}
	return certs, nil
}

func secretKey(s *corev1.Secret, key string) (crypto.Signer, error) {
	data := s.Data[key]
	if len(data) == 0 {
		return nil, fmt.Errorf("ca: secret %s: missing or empty key %s", secretName(s), key)
	}
	k, err := mtls.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: secret %s key %s: %w", secretName(s), key, err)
	}
	return k, nil
}
