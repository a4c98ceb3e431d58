package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

func basicMesh() meshSpec {
	ambient := map[string]string{"istio.io/dataplane-mode": "ambient"}
	return meshSpec{
		Namespaces: map[string]map[string]string{"demo": ambient, "legacy": nil},
		Pods: []cluster.PodSpec{
			{Name: "sleep-0", Namespace: "demo", Node: "node1", ServiceAccount: "sleep", Labels: map[string]string{"app": "sleep"}},
			{Name: "httpbin-0", Namespace: "demo", Node: "node2", ServiceAccount: "httpbin", Labels: map[string]string{"app": "httpbin"}},
			{Name: "httpbin-1", Namespace: "demo", Node: "node1", ServiceAccount: "httpbin", Labels: map[string]string{"app": "httpbin"}},
			{Name: "client-0", Namespace: "legacy", Node: "node1", Labels: map[string]string{"app": "client"}},
			{Name: "optout-0", Namespace: "demo", Node: "node2",
				Labels: map[string]string{"app": "optout", "istio.io/dataplane-mode": "none"}},
		},
		Services: []cluster.ServiceSpec{{Name: "httpbin", Namespace: "demo", ClusterIP: "10.96.0.10",
			Selector: map[string]string{"app": "httpbin"}, Ports: []cluster.ServicePort{{Name: "http", Port: 80, TargetPort: intOrPort(8080)}}}},
	}
}

// TestPodToPodOverHBONE: traffic between ambient pods crosses the node
// link only as TLS to 15008, and the app still sees the real client.
func TestPodToPodOverHBONE(t *testing.T) {
	m := startMesh(t, basicMesh())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sleep, remote, local := m.pods["sleep-0"], m.pods["httpbin-0"], m.pods["httpbin-1"]

	capture, err := m.Cluster.CaptureLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := sleep.Netns.HTTPClient(10 * time.Second)
	for _, tc := range []struct {
		name, url string
		pods      []string // acceptable serving pods
	}{
		{"across nodes", "http://" + remote.IP.String() + ":8080/across", []string{"httpbin-0"}},
		{"same node", "http://" + local.IP.String() + ":8080/local", []string{"httpbin-1"}},
		{"service VIP", "http://10.96.0.10/vip", []string{"httpbin-0", "httpbin-1"}},
	} {
		resp, err := echo.Get(ctx, client, tc.url, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.Status != 200 || resp.Report == nil {
			t.Fatalf("%s: status %d body %q", tc.name, resp.Status, resp.Body)
		}
		if !contains(tc.pods, resp.Report.Pod) {
			t.Errorf("%s: served by %s", tc.name, resp.Report.Pod)
		}
		if peer, _ := netip.ParseAddrPort(resp.Report.Peer); peer.Addr() != sleep.IP {
			t.Errorf("%s: app saw peer %s, want %s", tc.name, resp.Report.Peer, sleep.IP)
		}
	}
	segs, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) == 0 {
		t.Fatal("nothing crossed the node link")
	}
	if cluster.Contains(segs, []byte("GET /across")) {
		t.Error("application bytes crossed the node link in plaintext")
	}
	for _, f := range cluster.Flows(segs) {
		if f.Src.Port() != 15008 && f.Dst.Port() != 15008 {
			t.Errorf("flow %v on the node link is not HBONE", f)
		}
	}
}

// TestUncapturedPodsTalkPlaintext: pods outside the mesh (a namespace
// without the label, a pod labelled none in an ambient namespace) are not
// captured: they reach each other in plaintext, and reach ambient pods
// (PERMISSIVE) with the app seeing them directly.
func TestUncapturedPodsTalkPlaintext(t *testing.T) {
	m := startMesh(t, basicMesh())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	legacy, optout, remote := m.pods["client-0"], m.pods["optout-0"], m.pods["httpbin-0"]
	for _, p := range []string{"client-0", "optout-0"} {
		if m.Agents[m.pods[p].Node.Name].IsEnrolled(m.pods[p].UID) {
			t.Errorf("%s was enrolled", p)
		}
	}

	capture, err := m.Cluster.CaptureLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := echo.Get(ctx, legacy.Netns.HTTPClient(10*time.Second), "http://"+optout.IP.String()+":8080/uncaptured", nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("legacy -> optout: %v %+v", err, resp)
	}
	segs, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if !cluster.Contains(segs, []byte("GET /uncaptured")) {
		t.Error("traffic between two uncaptured pods did not cross the link in plaintext")
	}

	resp, err = echo.Get(ctx, legacy.Netns.HTTPClient(10*time.Second), "http://"+remote.IP.String()+":8080/plain", nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("legacy -> ambient: %v %+v", err, resp)
	}
	if peer, _ := netip.ParseAddrPort(resp.Report.Peer); peer.Addr() != legacy.IP {
		t.Errorf("app saw %s, want %s", resp.Report.Peer, legacy.IP)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
