package trustbundle

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/mtls"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func makeRoot(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loadOldRoot loads a root file holding the root "old"; "new" is another.
func loadOldRoot(t *testing.T) (f *File, path string, oldRoot, newRoot *x509.Certificate) {
	t.Helper()
	oldRoot, newRoot = makeRoot(t, "old"), makeRoot(t, "new")
	path = filepath.Join(t.TempDir(), "root-cert.pem")
	write(t, path, mtls.EncodeCertificatesPEM(oldRoot))
	f, err := Load(path, td, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f, path, oldRoot, newRoot
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	// Replace the file as a ConfigMap volume does: a new file renamed over.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func names(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, c.Subject.CommonName)
	}
	return strings.Join(s, ",")
}

func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":   nil,
		"garbage": []byte("not pem"),
		"key":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	} {
		p := filepath.Join(dir, name)
		write(t, p, data)
		if _, err := Load(p, td, nil); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing"), td, nil); err == nil {
		t.Error("missing file loaded")
	}
}

// TestRotation follows a root rotation through the file: both roots, then
// only the new one. The bundle handed out at Load follows each step; a
// broken file in between changes nothing.
func TestRotation(t *testing.T) {
	f, path, oldRoot, newRoot := loadOldRoot(t)
	b := f.Bundle()
	var notified []string // the authorities each OnChange call saw
	f.OnChange(func() { notified = append(notified, names(f.Authorities())) })
	steps := []struct {
		name    string
		content []byte
		changed bool
		wantErr bool
		want    string
	}{
		{"unchanged", mtls.EncodeCertificatesPEM(oldRoot), false, false, "old"},
		{"both roots", mtls.EncodeCertificatesPEM(oldRoot, newRoot), true, false, "old,new"},
		{"same roots, new bytes", append(mtls.EncodeCertificatesPEM(oldRoot, newRoot), '\n'), false, false, "old,new"},
		{"broken file", []byte("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"), false, true, "old,new"},
		{"emptied", nil, false, true, "old,new"},
		{"new root only", mtls.EncodeCertificatesPEM(newRoot), true, false, "new"},
	}
	for _, s := range steps {
		write(t, path, s.content)
		changed, err := f.Reload()
		if changed != s.changed || (err != nil) != s.wantErr {
			t.Fatalf("%s: changed %v, err %v", s.name, changed, err)
		}
		if got := names(b.X509Authorities()); got != s.want {
			t.Fatalf("%s: bundle has %s, want %s", s.name, got, s.want)
		}
		if got := names(f.Authorities()); got != s.want {
			t.Fatalf("%s: authorities %s, want %s", s.name, got, s.want)
		}
	}
	if got := strings.Join(notified, " "); got != "old,new new" {
		t.Fatalf("OnChange saw %q, want one call per change", got)
	}
}

// TestStartReloads: Start notices a change on its own.
func TestStartReloads(t *testing.T) {
	f, path, _, newRoot := loadOldRoot(t)
	f.Start(10 * time.Millisecond)
	defer f.Stop()
	write(t, path, mtls.EncodeCertificatesPEM(newRoot))
	deadline := time.Now().Add(5 * time.Second)
	for names(f.Authorities()) != "new" {
		if time.Now().After(deadline) {
			t.Fatalf("authorities still %s", names(f.Authorities()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
