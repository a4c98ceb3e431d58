package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// The waypoint scenario (Config.Waypoint): in the ambient namespace, the
// Service echo-wp uses the waypoint bench-wp (its pod on node2, outside
// the mesh as Istio's waypoints are), and echo-nowp selects the same
// server pod without a waypoint. Both map port 80 to the server's fortio
// HTTP server, so the two paths differ only by the waypoint hop:
//
//	via waypoint: mesh-client -> ztunnel node1 =HBONE=> waypoint =HBONE=> ztunnel node2 -> mesh-server
//	ztunnel only: mesh-client -> ztunnel node1 =HBONE=> ztunnel node2 -> mesh-server
const (
	podWaypoint = "bench-wp-0"
	// podNginx is the comparison nginx's own pod: outside the mesh, on
	// the waypoint's node, so nginx sits where the waypoint sits (between
	// the client's node and the server pod) and reaches the server over
	// the same kind of veth hop.
	podNginx        = "nginx-proxy"
	gatewayWaypoint = "bench-wp"
	svcViaWaypoint  = "echo-wp"
	svcNoWaypoint   = "echo-nowp"
	vipViaWaypoint  = "10.96.0.70"
	vipNoWaypoint   = "10.96.0.71"
	vipWaypoint     = "10.96.0.72"
	portVIP         = 80

	// waypointAdminAddr is the waypoint's admin endpoint (pprof) inside
	// its pod (meshenv starts it there).
	waypointAdminAddr = "127.0.0.1:15000"

	pathViaWaypoint = "waypoint"
	pathNoWaypoint  = "ztunnel-vip"
	// The reference for the added latency, outside the mesh: through the
	// nginx pod, and straight to the server.
	pathViaNginx = "nginx"
	pathNoNginx  = "no-proxy"
	// The reference in C, mirroring the waypoint's legs: an L7 nginx
	// with mTLS on both legs between two nginx stream mTLS hops, and the
	// two hops alone (nginxMTLSHopPaths).
	pathViaNginxMTLS = "nginx-l7-mtls"
	pathNoNginxMTLS  = "nginx-mtls-hops"
)

// addWaypoint adds the waypoint scenario's pod, Services and waypoint
// process to spec (the Gateway is written once the mesh runs: see
// waitWaypoint).
func addWaypoint(spec *meshenv.Spec, waypointBin string, args []string) {
	httpPorts := []cluster.ServicePort{{Name: "http", Port: portVIP, TargetPort: intstr.FromInt32(portFortio)}}
	server := map[string]string{"app": podMeshServer}
	gw := map[string]string{"gateway.networking.k8s.io/gateway-name": gatewayWaypoint}
	spec.Pods = append(spec.Pods, cluster.PodSpec{Name: podWaypoint, Namespace: nsMesh, Node: "node2", ServiceAccount: gatewayWaypoint,
		Labels: map[string]string{"istio.io/dataplane-mode": "none", "gateway.networking.k8s.io/gateway-name": gatewayWaypoint}})
	spec.Services = append(spec.Services,
		cluster.ServiceSpec{Name: svcViaWaypoint, Namespace: nsMesh, ClusterIP: vipViaWaypoint, Selector: server,
			Labels: map[string]string{"istio.io/use-waypoint": gatewayWaypoint}, Ports: httpPorts},
		cluster.ServiceSpec{Name: svcNoWaypoint, Namespace: nsMesh, ClusterIP: vipNoWaypoint, Selector: server, Ports: httpPorts},
		cluster.ServiceSpec{Name: gatewayWaypoint, Namespace: nsMesh, ClusterIP: vipWaypoint, Selector: gw,
			Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": gatewayWaypoint},
			Ports:  []cluster.ServicePort{{Name: "mesh", Port: meshenv.WaypointHBONEPort}, {Name: "status-port", Port: meshenv.WaypointReadyPort}}},
	)
	spec.Pods = append(spec.Pods, cluster.PodSpec{Name: podNginx, Namespace: nsDirect, Node: "node2", ServiceAccount: podNginx,
		Labels: map[string]string{"app": podNginx}})
	spec.Waypoints = append(spec.Waypoints, podWaypoint)
	spec.WaypointBinary = waypointBin
	spec.WaypointArgs = args
}

// waypointGatewayYAML is the waypoint's Gateway as Istio's deployer leaves
// it: its status carries the waypoint Service's ClusterIP.
func waypointGatewayYAML() string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s, namespace: %s, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: %d, protocol: HBONE}]
status:
  addresses: [{type: IPAddress, value: %q}]
  conditions:
  - {type: Programmed, status: "True", reason: Programmed, message: ok, lastTransitionTime: "2024-01-01T00:00:00Z"}
`, gatewayWaypoint, nsMesh, meshenv.WaypointHBONEPort, vipWaypoint)
}

// waypointBinary returns bin when it is an executable, else builds the
// waypoint into dir.
func waypointBinary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		if abs, err := filepath.Abs(bin); err == nil && isExecutable(abs) {
			return abs, nil
		}
	}
	out := filepath.Join(dir, "waypoint")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := runQuiet(ctx, nil, "", goTool(), "build", "-o", out, "github.com/zmesh/zmesh/waypoint/cmd/waypoint"); err != nil {
		return "", fmt.Errorf("build waypoint: %w", err)
	}
	return out, nil
}

// waypointPaths writes the Gateway and returns the two VIP paths once
// requests to echo-wp are counted by the waypoint (until ztunnel learns
// the binding, the VIP goes straight to the pod) and echo-nowp answers.
func waypointPaths(ctx context.Context, m *meshenv.Mesh) (via, direct *Path, wp Proc, err error) {
	proc := m.WaypointProcs[podWaypoint]
	if proc == nil {
		return nil, nil, Proc{}, errors.New("waypoint scenario: no waypoint process")
	}
	wp = Proc{Name: "waypoint " + podWaypoint, Pid: proc.Pid()}
	if err := m.WriteConfig("bench-waypoint.yaml", waypointGatewayYAML()); err != nil {
		return nil, nil, wp, fmt.Errorf("waypoint gateway: %w", err)
	}
	client := m.Pods[podMeshClient]
	via = &Path{Name: pathViaWaypoint, Client: client, HTTP: hostPort(vipViaWaypoint, portVIP), Proxies: map[int][]Proc{portFortio: {wp}}}
	direct = &Path{Name: pathNoWaypoint, Client: client, HTTP: hostPort(vipNoWaypoint, portVIP)}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	hc := client.Netns.HTTPClient(3 * time.Second)
	var last error
	for {
		last = get(ctx, hc, "http://"+direct.HTTP+"/")
		if last == nil {
			last = get(ctx, hc, "http://"+via.HTTP+"/")
		}
		if last == nil {
			var n float64
			n, last = waypointRequests(ctx, m)
			if last == nil && n > 0 {
				return via, direct, wp, nil
			}
			if last == nil {
				last = errors.New("the waypoint counted no request for " + svcViaWaypoint)
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil, wp, fmt.Errorf("waypoint scenario: traffic to %s never went through the waypoint: %w", svcViaWaypoint, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitGet retries get for up to 20 s, until it succeeds.
func waitGet(ctx context.Context, hc *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		err := get(ctx, hc, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving %s: %w", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waypointRequests is the waypoint's istio_requests_total for echo-wp
// with status 200.
func waypointRequests(ctx context.Context, m *meshenv.Mesh) (float64, error) {
	p := m.Pods[podWaypoint]
	url := fmt.Sprintf("http://%s/metrics", hostPort(p.IP.String(), meshenv.WaypointMetricsPort))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.Netns.HTTPClient(3 * time.Second).Do(req)
	if err != nil {
		return 0, fmt.Errorf("waypoint metrics: %w", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "istio_requests_total{") || !strings.Contains(line, `destination_service_name="`+svcViaWaypoint+`"`) ||
			!strings.Contains(line, `response_code="200"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("waypoint metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// ensureNginx returns nginx's path, installing the Debian package when it
// is missing.
func ensureNginx(ctx context.Context) (string, error) {
	find := func() (string, error) {
		if p, err := exec.LookPath("nginx"); err == nil {
			return p, nil
		}
		if isExecutable("/usr/sbin/nginx") {
			return "/usr/sbin/nginx", nil
		}
		return "", errors.New("nginx not found")
	}
	if p, err := find(); err == nil {
		return p, nil
	}
	if err := aptInstall(ctx, "nginx"); err != nil {
		return "", err
	}
	return find()
}

// nginxPort is where the comparison nginx listens in its pod.
const nginxPort = 8090

// startNginx runs nginx in pod as an HTTP/1.1 reverse proxy (keep-alive
// upstream connections) to upstream (host:port), with one worker pinned to
// cpu and its files under dir. It returns the master and worker processes
// once the proxy answers through the pod's IP.
func startNginx(ctx context.Context, m *meshenv.Mesh, bin, dir string, cpu int, pod *cluster.Pod, upstream string) ([]Proc, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	tmp := filepath.Join(dir, "tmp")
	conf := fmt.Sprintf(`user root;
daemon off;
worker_processes 1;
worker_cpu_affinity 1%s;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  upstream backend {
    server %s;
    keepalive 64;
  }
  server {
    listen %d;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, strings.Repeat("0", cpu), filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), tmp, tmp, tmp, tmp, tmp, upstream, nginxPort)
	proc, err := runNginx(m, bin, dir, "nginx-"+pod.Name, pod, conf)
	if err != nil {
		return nil, err
	}
	hc := m.Pods[podDirectClient].Netns.HTTPClient(3 * time.Second)
	if err := waitGet(ctx, hc, "http://"+hostPort(pod.IP.String(), nginxPort)+"/"); err != nil {
		return nil, fmt.Errorf("nginx: %w: %s", err, nginxErrors(dir))
	}
	worker, err := nginxWorker(proc)
	if err != nil {
		return nil, err
	}
	return []Proc{{Name: "nginx master", Pid: proc.Pid()}, {Name: "nginx worker", Pid: worker}}, nil
}

// runNginx starts nginx in pod with conf as its configuration, its files
// under dir.
func runNginx(m *meshenv.Mesh, bin, dir, name string, pod *cluster.Pod, conf string) (*cluster.Process, error) {
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	proc, err := m.Cluster.StartProcess(cluster.ProcessSpec{Name: name, Netns: pod.Netns, Path: bin,
		Args: []string{"-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cf}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return proc, nil
}

// nginxWorker returns the pid of the one worker of nginx's master proc.
func nginxWorker(proc *cluster.Process) (int, error) {
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", proc.Pid(), proc.Pid()))
	if err != nil {
		return 0, fmt.Errorf("%s workers: %w", proc.Name(), err)
	}
	f := strings.Fields(string(kids))
	if len(f) != 1 {
		return 0, fmt.Errorf("%s: want one worker, found %d", proc.Name(), len(f))
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("%s workers: %w", proc.Name(), err)
	}
	return pid, nil
}
