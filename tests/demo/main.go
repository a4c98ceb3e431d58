// Command demo runs a small zmesh on this machine and prints what each step
// proves: two nodes and four pods in network namespaces, the controller in
// local mode, and on each node a node agent and a ztunnel. It sends traffic
// through the mesh, applies the policies in examples/demo, and tears
// everything down (or, with -keep, leaves it running).
//
// Usage (as root): demo -echo bin/echo -examples examples [-keep]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

func main() {
	echoBin := flag.String("echo", "bin/echo", "echo app binary run in every pod")
	waypointBin := flag.String("waypoint", "bin/waypoint", "waypoint binary run in the waypoint pod")
	examples := flag.String("examples", "examples", "examples directory (demo/ holds the policies)")
	keep := flag.Bool("keep", false, "leave the mesh running until interrupted")
	verbose := flag.Bool("v", false, "print component logs")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *echoBin, *waypointBin, *examples, *keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

var ambient = map[string]string{"istio.io/dataplane-mode": "ambient"}

func spec(echoBin, waypointBin string, logger *slog.Logger) meshenv.Spec {
	httpbin := map[string]string{"app": "httpbin"}
	gw := map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint"}
	return meshenv.Spec{
		Prefix:     "zmdemo",
		Namespaces: map[string]map[string]string{"demo": ambient, "legacy": nil},
		Pods: []cluster.PodSpec{
			{Name: "sleep", Namespace: "demo", Node: "node1", ServiceAccount: "sleep", Labels: map[string]string{"app": "sleep"}},
			{Name: "notsleep", Namespace: "demo", Node: "node1", ServiceAccount: "notsleep", Labels: map[string]string{"app": "notsleep"}},
			{Name: "httpbin-1", Namespace: "demo", Node: "node2", ServiceAccount: "httpbin", Labels: httpbin},
			{Name: "httpbin-2", Namespace: "demo", Node: "node2", ServiceAccount: "httpbin", Labels: httpbin},
			{Name: "legacy", Namespace: "legacy", Node: "node1", Labels: map[string]string{"app": "legacy"}},
			// The waypoint's pod; it serves once examples/demo/waypoint.yaml
			// declares its Gateway.
			{Name: "waypoint", Namespace: "demo", Node: "node2", ServiceAccount: "waypoint",
				Labels: map[string]string{"istio.io/dataplane-mode": "none", "gateway.networking.k8s.io/gateway-name": "waypoint"}},
		},
		Services: []cluster.ServiceSpec{
			{Name: "httpbin", Namespace: "demo", ClusterIP: "10.96.0.10", Selector: httpbin,
				Labels: map[string]string{"istio.io/use-waypoint": "waypoint"},
				Ports:  []cluster.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
			{Name: "waypoint", Namespace: "demo", ClusterIP: "10.96.0.20", Selector: gw,
				Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": "waypoint"},
				Ports:  []cluster.ServicePort{{Name: "mesh", Port: 15008}, {Name: "status-port", Port: 15021}}},
		},
		Waypoints:      []string{"waypoint"},
		WaypointBinary: waypointBin,
		EchoPath:       echoBin,
		Logger:         logger,
	}
}

func run(ctx context.Context, echoBin, waypointBin, examples string, keep, verbose bool) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo builds network namespaces and needs root")
	}
	for _, bin := range []*string{&echoBin, &waypointBin} {
		if _, err := os.Stat(*bin); err != nil {
			return fmt.Errorf("%w (run `make demo`)", err)
		}
		*bin, _ = filepath.Abs(*bin)
	}
	logger := slog.New(slog.DiscardHandler)
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	m, err := meshenv.Start(sctx, spec(echoBin, waypointBin, logger))
	cancel()
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	d := &demo{m: m, ctx: ctx}
	d.say("mesh up in %v: 2 nodes, 5 pods and a waypoint pod; controller, 2 node agents and 2 ztunnels ready; demo/ is ambient, legacy/ is not",
		time.Since(start).Round(time.Millisecond))

	// mTLS across nodes, proven three ways.
	capture, err := m.Cluster.CaptureLink(ctx)
	if err != nil {
		return err
	}
	r, err := d.get("sleep", "http://"+m.Pods["httpbin-1"].IP.String()+":8080/hello")
	if err != nil {
		return err
	}
	segs, err := capture.Stop()
	if err != nil {
		return err
	}
	if cluster.Contains(segs, []byte("GET /hello")) {
		return errors.New("the request crossed the node link in plaintext")
	}
	for _, f := range cluster.Flows(segs) {
		if f.Src.Port() != 15008 && f.Dst.Port() != 15008 {
			return fmt.Errorf("non-HBONE flow on the node link: %v", f)
		}
	}
	peer, err := d.peerSeenBy("node2", "httpbin-1")
	if err != nil {
		return err
	}
	d.say("sleep -> httpbin-1 (node1 -> node2): %d, app saw client %s; node2's ztunnel saw peer %s over mutual TLS; node link carried %d segments, all TLS to 15008, no plaintext",
		r.Status, r.Report.Peer, peer, len(segs))

	r, err = d.get("sleep", "http://10.96.0.10/")
	if err != nil {
		return err
	}
	d.say("sleep -> httpbin service VIP 10.96.0.10:80: %d, served by %s (endpoint picked by ztunnel, target port 8080)", r.Status, r.Report.Pod)

	r, err = d.get("legacy", "http://"+m.Pods["httpbin-2"].IP.String()+":8080/")
	if err != nil {
		return err
	}
	d.say("legacy (outside the mesh) -> httpbin-2: %d in plaintext, allowed because demo/ is PERMISSIVE", r.Status)

	// STRICT.
	if err := d.apply(examples, "strict.yaml"); err != nil {
		return err
	}
	if err := d.until("legacy is refused", func() bool { return !d.reaches("legacy", "httpbin-2") }); err != nil {
		return err
	}
	if !d.reaches("sleep", "httpbin-2") {
		return errors.New("mTLS traffic refused under STRICT")
	}
	d.say("applied examples/demo/strict.yaml: legacy -> httpbin-2 refused (plaintext under STRICT); sleep -> httpbin-2 still 200 over mTLS")

	// ALLOW by principal.
	if err := d.apply(examples, "allow-sleep.yaml"); err != nil {
		return err
	}
	if err := d.until("notsleep is refused", func() bool { return !d.reaches("notsleep", "httpbin-1") }); err != nil {
		return err
	}
	if !d.reaches("sleep", "httpbin-1") {
		return errors.New("the allowed principal is refused")
	}
	d.say("applied examples/demo/allow-sleep.yaml: notsleep -> httpbin-1 denied (spiffe://cluster.local/ns/demo/sa/notsleep not allowed); sleep -> httpbin-1 still 200")

	// L7: a waypoint for the httpbin service.
	if err := d.apply(examples, "waypoint.yaml"); err != nil {
		return err
	}
	var denied *echo.Response
	if err := d.until("the waypoint enforces the L7 policy", func() bool {
		denied, err = d.getAny("sleep", "http://10.96.0.10/admin/users")
		return err == nil && denied.Status == http.StatusForbidden
	}); err != nil {
		return err
	}
	r, err = d.get("sleep", "http://10.96.0.10/hello")
	if err != nil {
		return err
	}
	via, err := d.waypointRequests()
	if err != nil {
		return err
	}
	d.say("applied examples/demo/waypoint.yaml: sleep -> httpbin VIP now goes through the waypoint (HBONE to it, L7 there): GET /admin/users -> %d %q (L7 AuthorizationPolicy), GET /hello -> %d from %s; waypoint counted %v requests in istio_requests_total",
		denied.Status, strings.TrimSpace(string(denied.Body)), r.Status, r.Report.Pod, via)

	// Access logs from the Telemetry API.
	if err := d.apply(examples, "access-logs.yaml"); err != nil {
		return err
	}
	var line accessLine
	if err := d.until("the waypoint logs a request", func() bool {
		if _, err := d.get("sleep", "http://10.96.0.10/logged"); err != nil {
			return false
		}
		var ok bool
		line, ok = d.waypointAccessLine("/logged")
		return ok
	}); err != nil {
		return err
	}
	d.say("applied examples/demo/access-logs.yaml (Telemetry accessLogging, envoy provider): the waypoint's stdout has a JSON line per request, e.g. %s %s -> %d from %s via %s",
		line.Method, line.Path, line.Code, line.Principal, line.Cluster)

	if keep {
		d.printTryIt()
		<-ctx.Done()
	}
	fmt.Println("\ndemo passed; tearing the mesh down")
	return nil
}

// demo holds the running mesh and numbers the steps it prints.
type demo struct {
	m    *meshenv.Mesh
	ctx  context.Context
	step int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Printf("%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

// get sends a request from pod and requires a 200 from the echo app.
func (d *demo) get(pod, url string) (*echo.Response, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	r, err := echo.Get(ctx, d.m.Pods[pod].Netns.HTTPClient(10*time.Second), url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s -> %s: %w", pod, url, err)
	}
	if r.Status != 200 || r.Report == nil {
		return nil, fmt.Errorf("%s -> %s: status %d", pod, url, r.Status)
	}
	return r, nil
}

// getAny is get that returns any HTTP status.
func (d *demo) getAny(pod, url string) (*echo.Response, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	return echo.Get(ctx, d.m.Pods[pod].Netns.HTTPClient(10*time.Second), url, nil)
}

// waypointRequests sums the waypoint's istio_requests_total.
func (d *demo) waypointRequests() (float64, error) {
	p := d.m.Pods["waypoint"]
	resp, err := p.Netns.HTTPClient(5 * time.Second).Get("http://" + p.IP.String() + ":15020/metrics")
	if err != nil {
		return 0, fmt.Errorf("waypoint metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("waypoint metrics: %w", err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "istio_requests_total{") {
			if v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

// accessLine is what the demo shows of a waypoint access log line.
type accessLine struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Code      int    `json:"response_code"`
	Principal string `json:"source_principal"`
	Cluster   string `json:"upstream_cluster"`
}

// waypointAccessLine finds an access log line for path in the waypoint's
// output.
func (d *demo) waypointAccessLine(path string) (accessLine, bool) {
	for l := range strings.Lines(d.m.WaypointProcs["waypoint"].Log()) {
		var a accessLine
		if json.Unmarshal([]byte(l), &a) == nil && a.Path == path {
			return a, true
		}
	}
	return accessLine{}, false
}

func (d *demo) reaches(src, dst string) bool {
	_, err := d.get(src, "http://"+d.m.Pods[dst].IP.String()+":8080/")
	return err == nil
}

func (d *demo) until(what string, cond func() bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting until %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func (d *demo) apply(examples, name string) error {
	b, err := os.ReadFile(filepath.Join(examples, "demo", name))
	if err != nil {
		return err
	}
	return d.m.WriteConfig(name, string(b))
}

// peerSeenBy reads node's ztunnel metrics for the source principal of
// connections it accepted for pod.
func (d *demo) peerSeenBy(node, pod string) (string, error) {
	resp, err := http.Get("http://" + d.m.Ztunnels[node].MetricsAddr().String() + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "istio_tcp_connections_opened_total{") &&
			strings.Contains(line, `reporter="destination"`) && strings.Contains(line, `destination_workload="`+pod+`"`) &&
			strings.Contains(line, `connection_security_policy="mutual_tls"`) {
			if _, rest, ok := strings.Cut(line, `source_principal="`); ok {
				principal, _, _ := strings.Cut(rest, `"`)
				return principal, nil
			}
		}
	}
	return "", fmt.Errorf("%s's ztunnel reported no mTLS connection to %s", node, pod)
}

func (d *demo) printTryIt() {
	m := d.m
	fmt.Printf("\nThe mesh keeps running (Ctrl-C to stop). Try, as root:\n")
	fmt.Printf("  ip netns exec %s %s client --url http://%s:8080/   # sleep -> httpbin-1\n",
		m.Pods["sleep"].Netns.Name, "bin/echo", m.Pods["httpbin-1"].IP)
	fmt.Printf("  ip netns exec %s %s client --url http://10.96.0.10/  # via the service VIP\n", m.Pods["sleep"].Netns.Name, "bin/echo")
	for node, zt := range m.Ztunnels {
		fmt.Printf("  curl -s http://%s/config_dump | less          # %s's ztunnel: workloads, policies, certificates\n", zt.AdminAddr(), node)
		fmt.Printf("  curl -s http://%s/metrics | grep istio_tcp    # %s's ztunnel metrics\n", zt.MetricsAddr(), node)
	}
	fmt.Printf("  edit or add policies under %s (the controller reloads them)\n", m.ConfigDir)
}
