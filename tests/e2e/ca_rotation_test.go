package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// pluggedCAFiles are a plugged-in CA's files: signer (a root here) signs,
// and root-cert.pem, the mesh's trust bundle, lists bundle.
func pluggedCAFiles(t *testing.T, signer *ca.SigningMaterial, bundle ...*ca.SigningMaterial) map[string][]byte {
	t.Helper()
	key, err := mtls.EncodePrivateKeyPEM(signer.Key)
	if err != nil {
		t.Fatal(err)
	}
	var roots []byte
	for _, b := range bundle {
		roots = append(roots, mtls.EncodeCertificatesPEM(b.Root)...)
	}
	return map[string][]byte{ca.CACertFile: mtls.EncodeCertificatesPEM(signer.Cert), ca.CAKeyFile: key, ca.RootCertFile: roots}
}

// writeCAFiles replaces the files of the running mesh's CA directory, each
// atomically, the key and certificate before the bundle.
func (m *mesh) writeCAFiles(files map[string][]byte) {
	m.t.Helper()
	for _, name := range []string{ca.CAKeyFile, ca.CACertFile, ca.RootCertFile} {
		path := filepath.Join(m.CADir(), name)
		if err := os.WriteFile(path+".tmp", files[name], 0o600); err != nil {
			m.t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			m.t.Fatal(err)
		}
	}
}

// certIssuers lists the issuers of node's ztunnel's workload certificates
// (its config dump).
func (m *mesh) certIssuers(node string) []string {
	m.t.Helper()
	resp, err := http.Get("http://" + m.ZtunnelHTTP[node].Admin + "/config_dump")
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Certificates []struct {
			Issuer string `json:"issuer"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, c := range dump.Certificates {
		if c.Issuer != "" && !slices.Contains(out, c.Issuer) {
			out = append(out, c.Issuer)
		}
	}
	return out
}

// TestPluggedCARootRotation rotates the mesh's plugged-in CA to a new root
// while it runs, as an operator does with Istio's cacerts: first the new
// root joins the trust bundle and signs, then the old root leaves. The
// controller picks each step up without a restart; ztunnels read the
// bundle file as it changes (as a mounted istio-ca-root-cert ConfigMap),
// get certificates of the new root when they restart, and renew those of
// a retired root by themselves. Traffic between a ztunnel holding a
// certificate of the old root and one holding a certificate of the new
// root flows throughout.
func TestPluggedCARootRotation(t *testing.T) {
	oldCA, err := ca.GenerateRoot("old-root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := ca.GenerateRoot("new-root", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const oldIssuer, newIssuer = "CN=old-root,O=old-root", "CN=new-root,O=new-root"
	spec := basicMesh()
	spec.CAFiles = pluggedCAFiles(t, oldCA, oldCA)
	spec.CAReloadInterval = 100 * time.Millisecond
	m := startMesh(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restart := func(node string) {
		t.Helper()
		m.StopZtunnel(node)
		if err := m.StartZtunnel(ctx, node); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitReady(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	// Waits for traffic and for node's certificates to come from issuer.
	traffic := func(what string, node, issuer string) {
		t.Helper()
		// The trust bundle file is re-read every 10 seconds.
		waitFor(t, what, func() (bool, string) {
			reaches, issuers := m.reaches("sleep-0", "httpbin-0"), m.certIssuers(node)
			return reaches && slices.Equal(issuers, []string{issuer}), fmt.Sprintf("reaches %v, %s's certificates from %v", reaches, node, issuers)
		})
	}
	traffic("traffic under the old root", "node1", oldIssuer)

	// Step 1: the new root is trusted and signs. node1's restarted
	// ztunnel holds a certificate of the new root, node2's one of the old.
	m.writeCAFiles(pluggedCAFiles(t, newCA, oldCA, newCA))
	m.eventually("the controller publishes both roots", func() bool {
		roots, _ := mtls.ParseCertificatesPEM(m.Controller.RootPEM())
		return len(roots) == 2
	})
	restart("node1")
	traffic("new-root certificate on node1 reaches old-root certificate on node2", "node1", newIssuer)
	if got := m.certIssuers("node2"); !slices.Equal(got, []string{oldIssuer}) {
		t.Fatalf("node2's certificates come from %v, want the old root still", got)
	}

	// Step 2: the old root leaves the bundle. node2's ztunnel is not
	// restarted: once it re-reads the bundle, its certificates of the
	// retired root are renewed at once.
	m.writeCAFiles(pluggedCAFiles(t, newCA, newCA))
	m.eventually("the controller publishes the new root alone", func() bool {
		roots, _ := mtls.ParseCertificatesPEM(m.Controller.RootPEM())
		return len(roots) == 1 && roots[0].Equal(newCA.Root)
	})
	traffic("node2 renews onto the new root by itself; traffic under the new root alone", "node2", newIssuer)
}
