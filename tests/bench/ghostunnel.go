package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// ghostunnelPath runs two ghostunnel hops per server port, the classic
// sidecar-style mTLS tunnel: a ghostunnel client in the (non-mesh) client
// pod listening on loopback, a ghostunnel server in the server pod
// terminating mTLS and forwarding to the server on loopback.
//
//	client -> 127.0.0.1:1xxxx (ghostunnel client) =mTLS=> server-ip:2xxxx (ghostunnel server) -> 127.0.0.1:xxxx
func ghostunnelPath(ctx context.Context, m *meshenv.Mesh, bin, dir string) (*Path, error) {
	client, server := m.Pods[podDirectClient], m.Pods[podDirectServer]
	certs, err := writeTunnelCerts(dir, server.IP.String())
	if err != nil {
		return nil, err
	}
	p := &Path{Name: pathGhostunnel, Client: client, Proxies: map[int][]Proc{}}
	for _, t := range p.portAddrs() {
		// Ports 5201/8088/9000 map to 15201/18088/19000 (client side) and
		// 25201/28088/29000 (server side).
		local := hostPort("127.0.0.1", 10000+t.port%10000)
		remote := hostPort(server.IP.String(), 20000+t.port%10000)
		srv, err := m.Cluster.StartProcess(cluster.ProcessSpec{
			Name: "ghostunnel-server-" + strconv.Itoa(t.port), Netns: server.Netns, Path: bin,
			Args: []string{"server", "--listen", remote, "--target", hostPort("127.0.0.1", t.port),
				"--cert", certs.serverCert, "--key", certs.serverKey, "--cacert", certs.ca, "--allow-all", "--quiet=all"},
		})
		if err != nil {
			return nil, fmt.Errorf("ghostunnel server: %w", err)
		}
		if err := client.Netns.WaitDial(ctx, remote); err != nil {
			return nil, fmt.Errorf("ghostunnel server: %w\n%s", err, srv.Log())
		}
		cli, err := m.Cluster.StartProcess(cluster.ProcessSpec{
			Name: "ghostunnel-client-" + strconv.Itoa(t.port), Netns: client.Netns, Path: bin,
			Args: []string{"client", "--listen", local, "--target", remote,
				"--cert", certs.clientCert, "--key", certs.clientKey, "--cacert", certs.ca, "--quiet=all"},
		})
		if err != nil {
			return nil, fmt.Errorf("ghostunnel client: %w", err)
		}
		if err := client.Netns.WaitDial(ctx, local); err != nil {
			return nil, fmt.Errorf("ghostunnel client: %w\n%s", err, cli.Log())
		}
		*t.addr = local
		p.Proxies[t.port] = []Proc{{Name: "ghostunnel client", Pid: cli.Pid()}, {Name: "ghostunnel server", Pid: srv.Pid()}}
	}
	return p, nil
}

// tunnelServerName is the server certificate's DNS name, besides its IP
// (nginx verifies a peer by DNS name only).
const tunnelServerName = "bench-server"

type tunnelCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// writeTunnelCerts writes a throwaway CA, a server certificate for
// serverIP and a client certificate (ECDSA P-256, like the mesh's) for the
// comparison tunnels.
func writeTunnelCerts(dir, serverIP string) (tunnelCerts, error) {
	c := tunnelCerts{
		ca:         filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return c, fmt.Errorf("ghostunnel certs: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, fmt.Errorf("ghostunnel certs: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "zmesh bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return c, fmt.Errorf("ghostunnel CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return c, fmt.Errorf("ghostunnel CA: %w", err)
	}
	if err := writePEM(c.ca, "CERTIFICATE", caDER); err != nil {
		return c, err
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("ghostunnel cert %s: %w", cn, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("ghostunnel cert %s: %w", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("ghostunnel key %s: %w", cn, err)
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "PRIVATE KEY", keyDER)
	}
	if err := leaf(2, tunnelServerName, x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP(serverIP)}, []string{tunnelServerName}, c.serverCert, c.serverKey); err != nil {
		return c, err
	}
	if err := leaf(3, "bench-client", x509.ExtKeyUsageClientAuth, nil, nil, c.clientCert, c.clientKey); err != nil {
		return c, err
	}
	return c, nil
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
