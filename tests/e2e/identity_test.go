package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// TestWrongServerIdentityGetsNothing: when the identity a destination
// presents is not the one the mesh expects for it, the client's ztunnel
// refuses the tunnel before any application byte is sent; the destination's
// ztunnel never opens an inbound connection.
func TestWrongServerIdentityGetsNothing(t *testing.T) {
	m := startMesh(t, basicMesh())
	if !m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("no traffic before the change")
	}
	// The controller now says httpbin-0 runs as another service account;
	// its ztunnel still presents the identity the node agent gave it.
	path := filepath.Join(m.ConfigDir, "mesh.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "\n---\n")
	for i, d := range docs {
		if strings.Contains(d, "name: httpbin-0\n") {
			docs[i] = strings.Replace(d, "serviceAccountName: httpbin", "serviceAccountName: impostor", 1)
		}
	}
	m.writeConfig("mesh.yaml", strings.Join(docs, "\n---\n"))
	m.eventually("sleep -> httpbin-0 refused", func() bool { return !m.reaches("sleep-0", "httpbin-0") })

	before := m.inboundConnections(t, "node2", "httpbin-0")
	if before == 0 {
		t.Fatal("the connections made before the change were not counted: the check below would prove nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := echo.Get(ctx, m.pods["sleep-0"].Netns.HTTPClient(3*time.Second),
		"http://"+m.pods["httpbin-0"].IP.String()+":8080/secret", nil); err == nil {
		t.Fatal("request went through to a destination with the wrong identity")
	}
	if after := m.inboundConnections(t, "node2", "httpbin-0"); after != before {
		t.Fatalf("the destination's ztunnel opened %v inbound connections", after-before)
	}
}

// inboundConnections sums the inbound mTLS connections node's ztunnel
// opened for pod.
func (m *mesh) inboundConnections(t *testing.T, node, pod string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + m.ZtunnelHTTP[node].Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "istio_tcp_connections_opened_total{") && strings.Contains(line, `reporter="destination"`) &&
			strings.Contains(line, `destination_workload="`+pod+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			if err == nil {
				n += v
			}
		}
	}
	return n
}
