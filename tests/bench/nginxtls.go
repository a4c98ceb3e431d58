package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// nginxStreamModule is where Debian's libnginx-mod-stream puts nginx's
// TCP proxy module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// ensureNginxStream returns nginx's path once nginx and its stream module
// are installed (Debian packages, installed when missing).
func ensureNginxStream(ctx context.Context) (string, error) {
	bin, err := ensureNginx(ctx)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(nginxStreamModule); err != nil {
		if err := aptInstall(ctx, "libnginx-mod-stream"); err != nil {
			return "", err
		}
		if _, err := os.Stat(nginxStreamModule); err != nil {
			return "", fmt.Errorf("nginx stream module: %w", err)
		}
	}
	return bin, nil
}

// nginxTLSPath runs the two-hop mTLS tunnel of ghostunnelPath with nginx's
// stream proxy: C and OpenSSL, one event-loop worker per hop, plain TCP
// relaying with no HTTP/2 in the tunnel. It is the floor a pair of L4 mTLS
// proxies in the same places reaches on this machine.
//
//	client -> 127.0.0.1:3xxxx (nginx) =mTLS=> server-ip:4xxxx (nginx) -> 127.0.0.1:xxxx
func nginxTLSPath(ctx context.Context, m *meshenv.Mesh, bin, dir string) (*Path, error) {
	client, server := m.Pods[podDirectClient], m.Pods[podDirectServer]
	certs, err := writeTunnelCerts(dir, server.IP.String())
	if err != nil {
		return nil, err
	}
	p := &Path{Name: pathNginxTLS, Client: client, Proxies: map[int][]Proc{}}
	var clientServers, serverServers []string
	for _, t := range p.portAddrs() {
		// Ports 5201/8088/9000 map to 35201/38088/39000 (client side) and
		// 45201/48088/49000 (server side).
		local := hostPort("127.0.0.1", 30000+t.port%10000)
		remote := hostPort(server.IP.String(), 40000+t.port%10000)
		clientServers = append(clientServers, fmt.Sprintf("server { listen %s; proxy_pass %s; }", local, remote))
		serverServers = append(serverServers, fmt.Sprintf("server { listen %s ssl; proxy_pass %s; }", remote, hostPort("127.0.0.1", t.port)))
		*t.addr = local
	}
	sdir, cdir := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	srv, err := runNginx(m, bin, sdir, "nginx-tls-server", server, nginxStreamConf(sdir, tunnelServerTLS(certs), serverServers))
	if err != nil {
		return nil, err
	}
	if err := client.Netns.WaitDial(ctx, hostPort(server.IP.String(), 40000+portEcho%10000)); err != nil {
		return nil, fmt.Errorf("nginx mTLS server: %w: %s", err, nginxErrors(sdir))
	}
	cli, err := runNginx(m, bin, cdir, "nginx-tls-client", client, nginxStreamConf(cdir, "    proxy_ssl on;\n"+tunnelClientTLS(certs), clientServers))
	if err != nil {
		return nil, err
	}
	if err := client.Netns.WaitDial(ctx, p.Echo); err != nil {
		return nil, fmt.Errorf("nginx mTLS client: %w: %s", err, nginxErrors(cdir))
	}
	// A round trip proves the tunnel (and that both workers are up).
	if _, err := connRate(ctx, p, 1, 5, 20*time.Second); err != nil {
		return nil, fmt.Errorf("nginx mTLS tunnel: %w: client: %s; server: %s", err, nginxErrors(cdir), nginxErrors(sdir))
	}
	cw, err := nginxWorker(cli)
	if err != nil {
		return nil, err
	}
	sw, err := nginxWorker(srv)
	if err != nil {
		return nil, err
	}
	procs := []Proc{{Name: "nginx mTLS client", Pid: cw}, {Name: "nginx mTLS server", Pid: sw}}
	for _, t := range p.portAddrs() {
		p.Proxies[t.port] = procs
	}
	return p, nil
}

// nginxErrors is the end of the error log of the nginx whose files are in
// dir.
func nginxErrors(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "error.log"))
	if err != nil {
		return err.Error()
	}
	return cluster.LastLines(string(b), 3)
}

// nginxStreamConf is an nginx configuration with one unpinned worker whose
// stream block has the directives common and the server blocks servers;
// nginx's files go under dir.
func nginxStreamConf(dir, common string, servers []string) string {
	return fmt.Sprintf(`load_module %s;
user root;
daemon off;
worker_processes 1;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
stream {
%s
    %s
}
`, nginxStreamModule, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), common, strings.Join(servers, "\n    "))
}

// Ports of the waypoint scenario's C reference (nginxMTLSHopPaths).
const (
	// mtlsHopDirectPort and mtlsHopViaPort are the client-side stream
	// hop's listeners on loopback: straight to the server-side hop, and
	// to the L7 nginx.
	mtlsHopDirectPort = 31088
	mtlsHopViaPort    = 32088
	// mtlsHopServerPort is the server-side stream hop on the server pod's
	// IP; mtlsHopL7Port the L7 nginx on the nginx pod's IP.
	mtlsHopServerPort = 41088
	mtlsHopL7Port     = 8443
)

// nginxMTLSHopPaths builds the waypoint scenario's reference in C: an
// nginx HTTP/1.1 reverse proxy with mTLS on both legs (one worker, in the
// nginx pod on the waypoint's node) between two nginx stream mTLS hops in
// the client and server pods, against the two hops alone. It mirrors
// ztunnel -> waypoint -> ztunnel against ztunnel -> ztunnel:
//
//	via:  client -> stream hop =mTLS=> nginx L7 =mTLS=> stream hop -> fortio server
//	base: client -> stream hop =mTLS=> stream hop -> fortio server
//
// The via path's Proxies are the L7 nginx's worker.
func nginxMTLSHopPaths(ctx context.Context, m *meshenv.Mesh, bin, dir string) (via, base *Path, err error) {
	client, server, proxy := m.Pods[podDirectClient], m.Pods[podDirectServer], m.Pods[podNginx]
	certs, err := writeTunnelCerts(dir, server.IP.String())
	if err != nil {
		return nil, nil, err
	}
	serverHop := hostPort(server.IP.String(), mtlsHopServerPort)
	l7 := hostPort(proxy.IP.String(), mtlsHopL7Port)
	sdir, pdir, cdir := filepath.Join(dir, "server"), filepath.Join(dir, "l7"), filepath.Join(dir, "client")
	if _, err := runNginx(m, bin, sdir, "nginx-mtls-hop-server", server, nginxStreamConf(sdir, tunnelServerTLS(certs),
		[]string{fmt.Sprintf("server { listen %s ssl; proxy_pass %s; }", serverHop, hostPort("127.0.0.1", portFortio))})); err != nil {
		return nil, nil, err
	}
	l7Proc, err := runNginx(m, bin, pdir, "nginx-mtls-hop-l7", proxy, fmt.Sprintf(`user root;
daemon off;
worker_processes 1;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s;
  proxy_temp_path %s;
  upstream backend {
    server %s;
    keepalive 64;
  }
  server {
    listen %s ssl;
%s
    location / {
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
%s
      proxy_ssl_session_reuse on;
    }
  }
}
`, filepath.Join(pdir, "nginx.pid"), filepath.Join(pdir, "error.log"), filepath.Join(pdir, "body"), filepath.Join(pdir, "proxy"),
		serverHop, l7, tunnelServerTLS(certs), tunnelClientTLS(certs)))
	if err != nil {
		return nil, nil, err
	}
	if _, err := runNginx(m, bin, cdir, "nginx-mtls-hop-client", client, nginxStreamConf(cdir, "    proxy_ssl on;\n"+tunnelClientTLS(certs), []string{
		fmt.Sprintf("server { listen %s; proxy_pass %s; }", hostPort("127.0.0.1", mtlsHopDirectPort), serverHop),
		fmt.Sprintf("server { listen %s; proxy_pass %s; }", hostPort("127.0.0.1", mtlsHopViaPort), l7),
	})); err != nil {
		return nil, nil, err
	}
	base = &Path{Name: pathNoNginxMTLS, Client: client, HTTP: hostPort("127.0.0.1", mtlsHopDirectPort)}
	via = &Path{Name: pathViaNginxMTLS, Client: client, HTTP: hostPort("127.0.0.1", mtlsHopViaPort)}
	hc := client.Netns.HTTPClient(3 * time.Second)
	for _, p := range []*Path{base, via} {
		if err := waitGet(ctx, hc, "http://"+p.HTTP+"/"); err != nil {
			return nil, nil, fmt.Errorf("nginx mTLS hop %s: %w: client: %s; L7: %s; server: %s", p.Name, err,
				nginxErrors(cdir), nginxErrors(pdir), nginxErrors(sdir))
		}
	}
	worker, err := nginxWorker(l7Proc)
	if err != nil {
		return nil, nil, err
	}
	via.Proxies = map[int][]Proc{portFortio: {{Name: "nginx mTLS L7 worker", Pid: worker}}}
	return via, base, nil
}

// tunnelServerTLS is the nginx directives of an mTLS server with certs
// (TLS 1.3, client certificates required); tunnelClientTLS those of an
// mTLS client that verifies the server by tunnelServerName.
func tunnelServerTLS(certs tunnelCerts) string {
	return `    ssl_protocols TLSv1.3;
    ssl_certificate ` + certs.serverCert + `;
    ssl_certificate_key ` + certs.serverKey + `;
    ssl_client_certificate ` + certs.ca + `;
    ssl_verify_client on;
`
}

func tunnelClientTLS(certs tunnelCerts) string {
	return `    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_certificate ` + certs.clientCert + `;
    proxy_ssl_certificate_key ` + certs.clientKey + `;
    proxy_ssl_trusted_certificate ` + certs.ca + `;
    proxy_ssl_verify on;
    proxy_ssl_name ` + tunnelServerName + `;
`
}
