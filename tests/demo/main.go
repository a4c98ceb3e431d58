// Command demo runs the controller binary on a copy of examples/mesh and
// shows, step by step, what a node's ztunnel gets from it: the workload API
// over delta xDS, certificates from the CA (and a refused impersonation),
// live updates on edit, and a bad edit that changes nothing.
//
// Usage: demo -controller bin/controller -examples examples [-keep]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

func main() {
	controller := flag.String("controller", "bin/controller", "controller binary")
	examples := flag.String("examples", "examples", "examples directory (mesh/ and tokens.txt)")
	keep := flag.Bool("keep", false, "leave the controller running until interrupted")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *controller, *examples, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, controllerBin, examples string, keep bool) error {
	work, err := os.MkdirTemp("", "zmesh-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	meshDir, caDir := filepath.Join(work, "mesh"), filepath.Join(work, "ca")
	if err := copyDir(filepath.Join(examples, "mesh"), meshDir); err != nil {
		return err
	}
	grpcAddr, monAddr := freeAddr(), freeAddr()

	cmd := exec.CommandContext(ctx, controllerBin, "--config-dir", meshDir, "--ca-dir", caDir,
		"--tokens-file", filepath.Join(examples, "tokens.txt"), "--grpc-addr", grpcAddr, "--monitoring-addr", monAddr,
		"--log-level", "warn")
	logFile, err := os.Create(filepath.Join(work, "controller.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start controller: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if err := waitReady("http://" + monAddr + "/healthz/ready"); err != nil {
		return fmt.Errorf("controller not ready (log: %s): %w", tail(logFile.Name()), err)
	}
	step(1, "controller started: xDS + CA on %s (TLS), monitoring on %s, serving %s", grpcAddr, monAddr, "examples/mesh")

	rootPEM, err := os.ReadFile(filepath.Join(caDir, "root-cert.pem"))
	if err != nil {
		return err
	}
	roots, err := mtls.ParseCertificatesPEM(rootPEM)
	if err != nil {
		return err
	}
	creds, err := caclient.TransportCredentials(roots, "localhost")
	if err != nil {
		return err
	}

	// 2. Subscribe as node1's ztunnel.
	addrs, policies := newView(), newView()
	client, err := xds.New(xds.Config{
		Address:     grpcAddr,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(creds)},
		Node:        xds.Node{IP: "172.30.0.11", PodName: "ztunnel-node1", Namespace: "istio-system", NodeName: "node1"},
		Token:       func(context.Context) (string, error) { return "demo-node1-ztunnel", nil },
		Types: []xds.TypeConfig{
			{TypeURL: workloadapi.AddressTypeURL, New: func() proto.Message { return &workloadapi.Address{} }, Handler: addrs},
			{TypeURL: security.AuthorizationTypeURL, New: func() proto.Message { return &security.Authorization{} }, Handler: policies},
		},
	})
	if err != nil {
		return err
	}
	if err := client.Start(); err != nil {
		return err
	}
	defer client.Stop()
	for _, typ := range []string{workloadapi.AddressTypeURL, security.AuthorizationTypeURL} {
		select {
		case <-client.Synced(typ):
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no %s from the controller", typ)
		}
	}
	addrs.take()
	policies.take()
	step(2, "node1's ztunnel subscribed over delta xDS: %d addresses, %d authorization policies", addrs.len(), policies.len())
	printWorkloads(addrs)

	// 3 and 4. Certificates by impersonation.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ca, err := caclient.New(conn, caclient.Options{Roots: roots, Token: "demo-node1-ztunnel"})
	if err != nil {
		return err
	}
	sleep := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/sleep")
	cert, err := ca.Fetch(ctx, caclient.Request{Identity: sleep, Impersonate: true})
	if err != nil {
		return fmt.Errorf("certificate for sleep: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(sleep.TrustDomain(), roots)
	id, _, err := x509svid.Verify(cert.Chain(), bundle)
	if err != nil {
		return fmt.Errorf("issued certificate does not verify: %w", err)
	}
	step(3, "CA: node1's ztunnel got a certificate for %s (sleep-0 runs on node1), valid until %s, verified as an X.509-SVID",
		id, cert.NotAfter().Format(time.RFC3339))
	nobody := spiffeid.RequireFromString("spiffe://cluster.local/ns/prod/sa/nobody")
	_, err = ca.Fetch(ctx, caclient.Request{Identity: nobody, Impersonate: true})
	if err == nil {
		return errors.New("CA issued a certificate for a service account with no pod on the node")
	}
	step(4, "CA: refused %s to node1's ztunnel (no such pod on node1): %s", nobody, status.Code(err))

	// 5. A live edit reaches the ztunnel as a one-resource delta.
	pods := filepath.Join(meshDir, "pods.yaml")
	data, err := os.ReadFile(pods)
	if err != nil {
		return err
	}
	edited, ok := markUnready(string(data), "httpbin-0")
	if !ok {
		return errors.New("httpbin-0 not found in pods.yaml")
	}
	start := time.Now()
	if err := writeAtomic(pods, edited); err != nil {
		return err
	}
	d, err := addrs.wait(5 * time.Second)
	if err != nil {
		return err
	}
	step(5, "edit: httpbin-0 became unready -> ztunnel received %d changed resource(s) %v in %v",
		len(d.Upserts), names(d), time.Since(start).Round(time.Millisecond))

	// 6. A broken edit changes nothing.
	if err := writeAtomic(filepath.Join(meshDir, "policies.yaml"), "kind: [broken\n"); err != nil {
		return err
	}
	if d, err := addrs.wait(700 * time.Millisecond); err == nil {
		return fmt.Errorf("a broken file changed served state: %v", names(d))
	}
	dump, err := httpGet("http://" + monAddr + "/debug/config_dump")
	if err != nil {
		return err
	}
	if !strings.Contains(dump, `"File": "policies.yaml"`) {
		return errors.New("the controller did not report the broken file")
	}
	step(6, "bad edit: policies.yaml broken -> nothing pushed, %d policies still served, problem reported in /debug/config_dump",
		policies.len())

	if keep {
		fmt.Printf("\nController left running (Ctrl-C to stop). Try:\n  curl -s http://%s/debug/config_dump | less\n  curl -s http://%s/metrics | grep -E 'pilot_|citadel_'\n  edit files under %s and watch the log at %s\n",
			monAddr, monAddr, meshDir, logFile.Name())
		<-ctx.Done()
	}
	fmt.Println("\ndemo passed: controller stopped and cleaned up")
	return nil
}

func step(n int, format string, args ...any) {
	fmt.Printf("%d. %s\n", n, fmt.Sprintf(format, args...))
}

// view is a client's copy of one resource type.
type view struct {
	mu     sync.Mutex
	state  map[string]proto.Message
	deltas chan xds.Delta
}

func newView() *view {
	return &view{state: map[string]proto.Message{}, deltas: make(chan xds.Delta, 16)}
}

func (v *view) HandleDelta(d xds.Delta) []xds.Rejection {
	v.mu.Lock()
	for _, u := range d.Upserts {
		v.state[u.Name] = u.Message
	}
	for _, r := range d.Removals {
		delete(v.state, r)
	}
	v.mu.Unlock()
	select {
	case v.deltas <- d:
	default:
	}
	return nil
}

func (v *view) len() int { v.mu.Lock(); defer v.mu.Unlock(); return len(v.state) }

// take discards the initial-state delta.
func (v *view) take() { <-v.deltas }

func (v *view) wait(d time.Duration) (xds.Delta, error) {
	select {
	case got := <-v.deltas:
		return got, nil
	case <-time.After(d):
		return xds.Delta{}, fmt.Errorf("no update within %v", d)
	}
}

func names(d xds.Delta) []string {
	var out []string
	for _, u := range d.Upserts {
		out = append(out, u.Name)
	}
	return out
}

func printWorkloads(v *view) {
	v.mu.Lock()
	defer v.mu.Unlock()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   NAMESPACE\tNAME\tIP\tNODE\tIDENTITY\tPROTOCOL\tPOLICIES")
	keys := make([]string, 0, len(v.state))
	for k := range v.state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := v.state[k].(*workloadapi.Address).GetWorkload()
		if w == nil {
			continue
		}
		ip := ""
		if len(w.GetAddresses()) > 0 {
			a, _ := netip.AddrFromSlice(w.GetAddresses()[0])
			ip = a.String()
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\tspiffe://%s/ns/%s/sa/%s\t%s\t%s\n", w.GetNamespace(), w.GetName(), ip, w.GetNode(),
			w.GetTrustDomain(), w.GetNamespace(), w.GetServiceAccount(), w.GetTunnelProtocol(), strings.Join(w.GetAuthorizationPolicies(), ","))
	}
	_ = tw.Flush()
}

// markUnready flips the Ready condition of the named pod's document.
func markUnready(all, pod string) (string, bool) {
	docs := strings.Split(all, "\n---\n")
	for i, d := range docs {
		if strings.Contains(d, "name: "+pod+"\n") && strings.Contains(d, `status: "True"`) {
			docs[i] = strings.Replace(d, `status: "True"`, `status: "False"`, 1)
			return strings.Join(docs, "\n---\n"), true
		}
	}
	return all, false
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path, body string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// freeAddr picks a free loopback port; "127.0.0.1:0" if none can be probed
// (the controller then fails to be reached and the demo says so).
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 15s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
