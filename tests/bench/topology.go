package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// Namespaces and pods: a client on node1 and a server on node2, once in a
// namespace outside the mesh (the direct baseline) and once in an ambient
// one (through ztunnel on both nodes).
const (
	nsDirect = "bench-direct"
	nsMesh   = "bench-mesh"

	podDirectClient = "direct-client"
	podDirectServer = "direct-server"
	podMeshClient   = "mesh-client"
	podMeshServer   = "mesh-server"
)

// Ports the servers listen on inside the server pods (the echo app that
// meshenv runs in every pod has HTTP 8080 and TCP 9000).
const (
	portIperf  = 5201
	portFortio = 8088
	portEcho   = 9000
)

// Path names.
const (
	pathDirect     = "direct"
	pathMesh       = "ztunnel"
	pathGhostunnel = "ghostunnel"
	pathNginxTLS   = "nginx-mtls"
)

func meshSpec(prefix, echoBin string, echoEnv []string, ztunnelBin string, log *slog.Logger) meshenv.Spec {
	pod := func(name, ns, node string) cluster.PodSpec {
		return cluster.PodSpec{Name: name, Namespace: ns, Node: node, ServiceAccount: name, Labels: map[string]string{"app": name}}
	}
	return meshenv.Spec{
		Prefix: prefix,
		Namespaces: map[string]map[string]string{
			nsDirect: nil,
			nsMesh:   {"istio.io/dataplane-mode": "ambient"},
		},
		Pods: []cluster.PodSpec{
			pod(podDirectClient, nsDirect, "node1"), pod(podDirectServer, nsDirect, "node2"),
			pod(podMeshClient, nsMesh, "node1"), pod(podMeshServer, nsMesh, "node2"),
		},
		EchoPath:      echoBin,
		EchoEnv:       echoEnv,
		ZtunnelBinary: ztunnelBin,
		Logger:        log,
	}
}

// Path is one way from a client pod to a server: the addresses the client
// dials for each server, and the proxies in between.
type Path struct {
	Name   string
	Client *cluster.Pod
	// Iperf, HTTP and Echo are host:port as dialled from Client.
	Iperf, HTTP, Echo string
	// Proxies are the processes that carry the path to each server port
	// (none for direct).
	Proxies map[int][]Proc
}

// portAddr is a server port and the Path field with the address the
// client dials for it.
type portAddr struct {
	port int
	addr *string
}

// portAddrs returns p's server ports with their address fields.
func (p *Path) portAddrs() []portAddr {
	return []portAddr{{portIperf, &p.Iperf}, {portFortio, &p.HTTP}, {portEcho, &p.Echo}}
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// directAndMeshPaths returns the two paths through pods meshenv created.
func directAndMeshPaths(m *meshenv.Mesh) (direct, mesh *Path, err error) {
	mk := func(name, client, server string) *Path {
		ip := m.Pods[server].IP.String()
		return &Path{Name: name, Client: m.Pods[client],
			Iperf: hostPort(ip, portIperf), HTTP: hostPort(ip, portFortio), Echo: hostPort(ip, portEcho)}
	}
	direct = mk(pathDirect, podDirectClient, podDirectServer)
	mesh = mk(pathMesh, podMeshClient, podMeshServer)
	var zts []Proc
	for _, n := range m.Cluster.Nodes() {
		p := m.ZtunnelProcs[n.Name]
		if p == nil {
			return nil, nil, fmt.Errorf("no ztunnel process on %s (meshenv.Spec.ZtunnelBinary unset?)", n.Name)
		}
		zts = append(zts, Proc{Name: "ztunnel " + n.Name, Pid: p.Pid()})
	}
	mesh.Proxies = map[int][]Proc{portIperf: zts, portFortio: zts, portEcho: zts}
	return direct, mesh, nil
}

// startServers runs an iperf3 server and a fortio HTTP server in pod and
// waits until both accept connections (dialled over the pod's loopback,
// which no proxy captures).
func startServers(ctx context.Context, m *meshenv.Mesh, tools Tools, pod *cluster.Pod) error {
	if _, err := m.Cluster.StartProcess(cluster.ProcessSpec{
		Name: "iperf3-" + pod.Name, Netns: pod.Netns, Path: tools.Iperf3,
		Args: []string{"-s", "-p", strconv.Itoa(portIperf)},
	}); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	if _, err := m.Cluster.StartProcess(cluster.ProcessSpec{
		Name: "fortio-" + pod.Name, Netns: pod.Netns, Path: tools.Fortio,
		Args: []string{"server", "-http-port", strconv.Itoa(portFortio), "-grpc-port", "disabled",
			"-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled",
			"-ui-path", "", "-loglevel", "Warning"},
	}); err != nil {
		return fmt.Errorf("fortio server: %w", err)
	}
	for _, port := range []int{portIperf, portFortio} {
		if err := pod.Netns.WaitDial(ctx, hostPort("127.0.0.1", port)); err != nil {
			return fmt.Errorf("server in %s: %w", pod.Name, err)
		}
	}
	return nil
}

// checkMTLS proves the mesh path goes through both ztunnels: the server
// node's ztunnel must have counted a mutual-TLS connection to the mesh
// server (so the numbers are not those of an uncaptured, direct path).
func checkMTLS(ctx context.Context, m *meshenv.Mesh) error {
	server := m.Pods[podMeshServer]
	url := "http://" + m.ZtunnelHTTP[server.Node.Name].Metrics + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("ztunnel metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ztunnel metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("ztunnel metrics: %w", err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "istio_tcp_connections_opened_total{") &&
			strings.Contains(line, `reporter="destination"`) &&
			strings.Contains(line, `destination_workload="`+server.Name+`"`) &&
			strings.Contains(line, `connection_security_policy="mutual_tls"`) {
			return nil
		}
	}
	return fmt.Errorf("%s's ztunnel counted no mutual-TLS connection to %s: is the mesh path captured?", server.Node.Name, server.Name)
}
