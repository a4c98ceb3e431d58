package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/pkg/mtls"
)

func getSecret(t *testing.T, c *kube.Clients, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := c.Kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func putSecret(t *testing.T, c *kube.Clients, ns, name string, data map[string][]byte) {
	t.Helper()
	_, err := c.Kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSecretStoreCreateAndReuse(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "casecret", nil)
	ctx := context.Background()
	opts := ca.LoadOptions{TrustDomain: "cluster.local"}

	m1, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, ns, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !m1.SelfSigned() || m1.Root.Subject.CommonName != "cluster.local" {
		t.Fatalf("generated material is not a cluster.local self-signed root: %v", m1.Root.Subject)
	}
	s := getSecret(t, c, ns, ca.SelfSignedSecretName)
	if s.Type != "istio.io/ca-root" {
		t.Errorf("secret type %q, want istio.io/ca-root", s.Type)
	}
	for _, k := range []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "key.pem", "root-cert.pem"} {
		if _, ok := s.Data[k]; !ok {
			t.Errorf("secret lacks key %s", k)
		}
	}
	certs, err := mtls.ParseCertificatesPEM(s.Data["ca-cert.pem"])
	if err != nil || len(certs) != 1 || !certs[0].Equal(m1.Root) {
		t.Fatalf("ca-cert.pem does not hold the generated root (err %v)", err)
	}
	key, err := mtls.ParsePrivateKeyPEM(s.Data["ca-key.pem"])
	if err != nil || mtls.KeyMatchesCertificate(key, m1.Root) != nil {
		t.Fatalf("ca-key.pem does not hold the root's key (err %v)", err)
	}

	m2, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, ns, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Root.Equal(m1.Root) {
		t.Fatal("second start generated a new root instead of reusing the secret")
	}
	if after := getSecret(t, c, ns, ca.SelfSignedSecretName); after.ResourceVersion != s.ResourceVersion {
		t.Fatal("second start rewrote the secret")
	}
	// The loaded material signs certificates that chain to the root.
	a, err := ca.NewAuthority(m2, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(csrFor(t, newKey(t)), spiffeID(t, "spiffe://cluster.local/ns/a/sa/b"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := chain[0].CheckSignatureFrom(m1.Root); err != nil {
		t.Fatalf("issued leaf does not chain to the stored root: %v", err)
	}
}

func TestSecretStoreConcurrentCreation(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "casecret", nil)
	const replicas = 4
	var wg sync.WaitGroup
	got := make([]*ca.SigningMaterial, replicas)
	errs := make([]error, replicas)
	logs := make([]bytes.Buffer, replicas)
	start := make(chan struct{})
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = ca.LoadOrCreateFromSecret(context.Background(), c.Kube, ns, ca.LoadOptions{
				TrustDomain: "cluster.local",
				Logger:      slog.New(slog.NewTextHandler(&logs[i], nil)),
			})
		}()
	}
	close(start)
	wg.Wait()
	stored := getSecret(t, c, ns, ca.SelfSignedSecretName)
	certs, err := mtls.ParseCertificatesPEM(stored.Data["ca-cert.pem"])
	if err != nil {
		t.Fatal(err)
	}
	generated := 0
	for i := range replicas {
		generated += strings.Count(logs[i].String(), "generated self-signed root")
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !got[i].Root.Equal(certs[0]) {
			t.Fatalf("replica %d uses a root other than the stored one", i)
		}
		if mtls.KeyMatchesCertificate(got[i].Key, certs[0]) != nil {
			t.Fatalf("replica %d holds another key", i)
		}
	}
	if generated != 1 {
		t.Fatalf("%d replicas report creating the root, want 1", generated)
	}
}

func TestSecretStorePluggedWins(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "casecret", nil)
	ctx := context.Background()

	// A self-signed root already exists; the plugged-in CA still wins.
	if _, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, ns, ca.LoadOptions{TrustDomain: "cluster.local"}); err != nil {
		t.Fatal(err)
	}
	root, err := ca.GenerateRoot("corp root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inter, interKey := newIntermediate(t, "istio intermediate", root.Root, root.Key, time.Now().Add(24*time.Hour))
	putSecret(t, c, ns, ca.PluggedSecretName, map[string][]byte{
		"ca-cert.pem":    mtls.EncodeCertificatesPEM(inter),
		"ca-key.pem":     keyPEM(t, interKey),
		"root-cert.pem":  mtls.EncodeCertificatesPEM(root.Root),
		"cert-chain.pem": mtls.EncodeCertificatesPEM(inter, root.Root),
	})
	m, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, ns, ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if m.SelfSigned() || !m.Cert.Equal(inter) || !m.Root.Equal(root.Root) || len(m.Intermediates) != 0 {
		t.Fatalf("plugged-in CA not used: signer %v root %v intermediates %d", m.Cert.Subject, m.Root.Subject, len(m.Intermediates))
	}
	if got := m.Chain(); len(got) != 2 || !got[0].Equal(inter) || !got[1].Equal(root.Root) {
		t.Fatal("chain is not intermediate, root")
	}
}

func TestSecretStoreMalformed(t *testing.T) {
	c := kubetest.Clients(t)
	root, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := mtls.EncodeCertificatesPEM(root.Root)
	rootKey := keyPEM(t, root.Key)
	other, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherKey := keyPEM(t, other.Key)
	inter, interKey := newIntermediate(t, "intermediate", root.Root, root.Key, time.Now().Add(time.Hour))
	interPEM := mtls.EncodeCertificatesPEM(inter)

	tests := []struct {
		name    string
		secret  string
		data    map[string][]byte
		wantErr string
	}{
		{name: "self-signed: empty", secret: ca.SelfSignedSecretName, data: map[string][]byte{}, wantErr: "missing or empty key ca-cert.pem"},
		{name: "self-signed: no key", secret: ca.SelfSignedSecretName, data: map[string][]byte{"ca-cert.pem": rootPEM}, wantErr: "missing or empty key ca-key.pem"},
		{name: "self-signed: garbage cert", secret: ca.SelfSignedSecretName, data: map[string][]byte{"ca-cert.pem": []byte("junk"), "ca-key.pem": rootKey}, wantErr: "ca-cert.pem"},
		{name: "self-signed: wrong key", secret: ca.SelfSignedSecretName, data: map[string][]byte{"ca-cert.pem": rootPEM, "ca-key.pem": otherKey}, wantErr: "signing key"},
		{name: "self-signed: two certs", secret: ca.SelfSignedSecretName, data: map[string][]byte{"ca-cert.pem": append(append([]byte{}, rootPEM...), rootPEM...), "ca-key.pem": rootKey}, wantErr: "exactly one"},
		{name: "self-signed: not self-signed", secret: ca.SelfSignedSecretName, data: map[string][]byte{"ca-cert.pem": interPEM, "ca-key.pem": keyPEM(t, interKey)}, wantErr: "not self-signed"},
		{name: "plugged: no root", secret: ca.PluggedSecretName, data: map[string][]byte{"ca-cert.pem": interPEM, "ca-key.pem": keyPEM(t, interKey)}, wantErr: "missing or empty key root-cert.pem"},
		{name: "plugged: garbage chain", secret: ca.PluggedSecretName, data: map[string][]byte{"ca-cert.pem": interPEM, "ca-key.pem": keyPEM(t, interKey), "root-cert.pem": rootPEM, "cert-chain.pem": []byte("junk")}, wantErr: "cert-chain.pem"},
		{name: "plugged: wrong root", secret: ca.PluggedSecretName, data: map[string][]byte{"ca-cert.pem": interPEM, "ca-key.pem": keyPEM(t, interKey), "root-cert.pem": mtls.EncodeCertificatesPEM(other.Root)}, wantErr: "does not chain"},
		{name: "plugged: only tls keys", secret: ca.PluggedSecretName, data: map[string][]byte{"tls.crt": interPEM, "tls.key": keyPEM(t, interKey)}, wantErr: "missing or empty key ca-cert.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := kubetest.Namespace(t, c, "casecret", nil)
			putSecret(t, c, ns, tt.secret, tt.data)
			before := getSecret(t, c, ns, tt.secret)
			m, err := ca.LoadOrCreateFromSecret(context.Background(), c.Kube, ns, ca.LoadOptions{TrustDomain: "cluster.local"})
			if err == nil {
				t.Fatalf("malformed secret accepted (root %v)", m.Root.Subject)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), ns+"/"+tt.secret) {
				t.Fatalf("error %q does not name the secret and %q", err, tt.wantErr)
			}
			if after := getSecret(t, c, ns, tt.secret); after.ResourceVersion != before.ResourceVersion {
				t.Fatal("malformed secret was overwritten")
			}
			if tt.secret == ca.PluggedSecretName {
				list, err := c.Kube.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(list.Items) != 1 {
					t.Fatalf("%d secrets after a malformed cacerts, want 1 (no self-signed root created)", len(list.Items))
				}
			}
		})
	}
}

func TestSecretStoreArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := ca.LoadOrCreateFromSecret(ctx, nil, "ns", ca.LoadOptions{TrustDomain: "cluster.local"}); err == nil {
		t.Error("nil client accepted")
	}
	c := kubetest.Clients(t)
	if _, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, "", ca.LoadOptions{TrustDomain: "cluster.local"}); err == nil {
		t.Error("empty namespace accepted")
	}
	if _, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, "ns", ca.LoadOptions{}); err == nil {
		t.Error("empty trust domain accepted")
	}
	// The API server cannot be reached: an error, not a new root.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ca.LoadOrCreateFromSecret(cancelled, c.Kube, "ns", ca.LoadOptions{TrustDomain: "cluster.local"}); err == nil {
		t.Error("unreachable API server: material returned")
	}
}

// The cacerts Secret, edited while the controller runs, reaches the
// Authority through the Reloader; a Secret that goes away changes nothing.
func TestSecretStorePluggedReload(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "casecret", nil)
	ctx := context.Background()
	oldRoot, err := ca.GenerateRoot("old root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := ca.GenerateRoot("new root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	day := time.Now().Add(24 * time.Hour)
	oldInter, oldKey := newIntermediate(t, "old intermediate", oldRoot.Root, oldRoot.Key, day)
	newInter, newKey := newIntermediate(t, "new intermediate", newRoot.Root, newRoot.Key, day)
	data := func(inter *x509.Certificate, key crypto.Signer, bundle ...*x509.Certificate) map[string][]byte {
		return map[string][]byte{"ca-cert.pem": mtls.EncodeCertificatesPEM(inter), "ca-key.pem": keyPEM(t, key),
			"root-cert.pem": mtls.EncodeCertificatesPEM(bundle...)}
	}
	putSecret(t, c, ns, ca.PluggedSecretName, data(oldInter, oldKey, oldRoot.Root))
	m, err := ca.LoadOrCreateFromSecret(ctx, c.Kube, ns, ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ca.NewReloader(ca.ReloaderOptions{Load: ca.PluggedSecretLoader(c.Kube, ns), Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	if r.Check(ctx) {
		t.Fatal("unchanged Secret reloaded")
	}
	s := getSecret(t, c, ns, ca.PluggedSecretName)
	s.Data = data(newInter, newKey, oldRoot.Root, newRoot.Root)
	if _, err := c.Kube.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !r.Check(ctx) || !a.Material().Cert.Equal(newInter) || !a.Root().Equal(newRoot.Root) || len(a.Roots()) != 2 {
		t.Fatalf("edited Secret not reloaded: signer %s, %d anchors", a.Material().Cert.Subject, len(a.Roots()))
	}
	if err := c.Kube.CoreV1().Secrets(ns).Delete(ctx, ca.PluggedSecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r.Check(ctx) || !a.Material().Cert.Equal(newInter) {
		t.Fatal("deleted Secret changed the Authority")
	}
}
