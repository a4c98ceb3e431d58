package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/websocket"

	"github.com/zmesh/zmesh/waypoint/config"
)

// TestWebSocket checks that a WebSocket upgrade passes through the
// waypoint as Istio's does: the upgrade request is routed (and its headers
// edited) like any request, the 101 answer is relayed, and then messages
// flow both ways until the client closes; the access log records the
// session as one request with status 101.
func TestWebSocket(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	ws := routeTo("ws", prefix("/ws"), subset("v2"))
	ws.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route", Value: "ws"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{ws, routeTo("default", prefix("/"), subset("v1"))}))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn *websocket.Conn
	m.eventually("websocket handshake through the waypoint", func() error {
		st, err := m.tunnel(ctx, reviewsVIP+":9080")
		if err != nil {
			return err
		}
		cfg, err := websocket.NewConfig("ws://reviews:9080/ws", "http://reviews")
		if err != nil {
			return err
		}
		c, err := websocket.NewClient(cfg, st)
		if err != nil {
			_ = st.Close()
			return err
		}
		conn = c
		return nil
	})
	defer func() { _ = conn.Close() }()

	var hello string
	if err := websocket.Message.Receive(conn, &hello); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if hello != "reviews-v2 ws" {
		t.Fatalf("greeting %q: want the /ws route's subset and its added header, \"reviews-v2 ws\"", hello)
	}
	big := strings.Repeat("x", 200<<10) // several HTTP/2 frames and TLS records
	for _, msg := range []string{"one", "two", big, "three"} {
		if err := websocket.Message.Send(conn, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		var got string
		if err := websocket.Message.Receive(conn, &got); err != nil {
			t.Fatalf("receive: %v", err)
		}
		if got != "reviews-v2:"+msg {
			t.Fatalf("echo of a %d-byte message: got %d bytes %.40q", len(msg), len(got), got)
		}
	}
	_ = conn.Close()
	m.eventually("the session's access log line", func() error {
		for _, line := range strings.Split(m.logBuf.String(), "\n") {
			if strings.Contains(line, `"/ws"`) || strings.Contains(line, `/ws"`) {
				if strings.Contains(line, `"response_code":101`) {
					return nil
				}
				return fmt.Errorf("log line without status 101: %s", line)
			}
		}
		return fmt.Errorf("no access log line for /ws in %q", m.logBuf.String())
	})

	// Other upgrades are not passed through: the request is served as a
	// plain one, without the hop-by-hop Upgrade header.
	c := m.httpClient(reviewsVIP+":9080", false)
	r := m.get(c, "http://reviews:9080/plain", map[string]string{"Connection": "Upgrade", "Upgrade": "h2c"})
	if r.code != 200 || r.echo.Headers["upgrade"] != "" || r.echo.Pod != "reviews-v1" {
		t.Fatalf("h2c upgrade request: code %d, pod %q, upstream Upgrade header %q", r.code, r.echo.Pod, r.echo.Headers["upgrade"])
	}
}
