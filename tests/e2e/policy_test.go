package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

func policyMesh() meshSpec {
	spec := basicMesh()
	spec.Pods = append(spec.Pods, cluster.PodSpec{Name: "other-0", Namespace: "demo", Node: "node1", ServiceAccount: "other",
		Labels: map[string]string{"app": "other"}})
	return spec
}

// reaches reports whether an HTTP request from pod src to dst:8080 succeeds.
func (m *mesh) reaches(src, dst string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := echo.Get(ctx, m.pods[src].Netns.HTTPClient(3*time.Second), "http://"+m.pods[dst].IP.String()+":8080/", nil)
	return err == nil && resp.Status == 200
}

// eventually waits (bounded) for cond: policy takes a moment to propagate.
func (m *mesh) eventually(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("never: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAuthorizationPolicy(t *testing.T) {
	m := startMesh(t, policyMesh())
	if !m.reaches("other-0", "httpbin-0") || !m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("no policy yet, but traffic is refused")
	}

	// ALLOW by principal: only sleep may reach httpbin.
	m.writeConfig("allow-sleep.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-allow-sleep, namespace: demo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/sleep"]}}]}]
`)
	m.eventually("other is denied by the ALLOW policy", func() bool { return !m.reaches("other-0", "httpbin-0") })
	if !m.reaches("sleep-0", "httpbin-0") || !m.reaches("sleep-0", "httpbin-1") {
		t.Fatal("the allowed principal is refused")
	}
	if m.reaches("client-0", "httpbin-0") {
		t.Fatal("a plaintext client passed an ALLOW-by-principal policy")
	}

	// ALLOW by namespace instead.
	m.writeConfig("allow-sleep.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-allow-sleep, namespace: demo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules: [{from: [{source: {namespaces: ["demo"]}}]}]
`)
	m.eventually("other (namespace demo) is allowed", func() bool { return m.reaches("other-0", "httpbin-0") })
	if m.reaches("client-0", "httpbin-0") {
		t.Fatal("a plaintext client from legacy passed an ALLOW-by-namespace policy")
	}
	m.removeConfig("allow-sleep.yaml")

	// DENY by port: 9000 closed, 8080 open.
	m.writeConfig("deny-port.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-9000, namespace: demo}
spec:
  action: DENY
  rules: [{to: [{operation: {ports: ["9000"]}}]}]
`)
	m.eventually("port 9000 denied", func() bool { return tcpEcho(m.pods["sleep-0"], m.pods["httpbin-0"]) != nil })
	if !m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("port 8080 refused by a DENY on 9000")
	}
}

// TestPolicyChangeClosesLiveConnection: an established connection is cut
// when a new policy denies it.
func TestPolicyChangeClosesLiveConnection(t *testing.T) {
	m := startMesh(t, policyMesh())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := m.pods["sleep-0"].Netns.DialContext(ctx, "tcp", m.pods["httpbin-0"].IP.String()+":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := roundTrip(conn, "before"); err != nil {
		t.Fatal(err)
	}
	m.writeConfig("deny-sleep.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: demo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/sleep"]}}]}]
`)
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadAll(conn); err != nil && isTimeout(err) {
		t.Fatal("the live connection was not closed after the policy denied it")
	}
}

// TestStrictMTLS: STRICT refuses plaintext from outside the mesh; mTLS
// still works.
func TestStrictMTLS(t *testing.T) {
	m := startMesh(t, policyMesh())
	m.writeConfig("strict.yaml", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec: {mtls: {mode: STRICT}}
`)
	m.eventually("plaintext refused under STRICT", func() bool { return !m.reaches("client-0", "httpbin-0") })
	if !m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("mTLS traffic refused under STRICT")
	}
	m.writeConfig("strict.yaml", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec: {mtls: {mode: PERMISSIVE}}
`)
	m.eventually("plaintext allowed under PERMISSIVE", func() bool { return m.reaches("client-0", "httpbin-0") })
}

// tcpEcho round-trips a message to dst's TCP echo port from src.
func tcpEcho(src, dst *cluster.Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := src.Netns.DialContext(ctx, "tcp", dst.IP.String()+":9000")
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(c, "ping")
}

func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
