package echo

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestGRPCListener(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: GRPC})
	conn, err := grpc.NewClient("passthrough:///"+addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, method := range []string{"/zmesh.echo.Echo/Call", "/other.Service/Any"} {
		rep, err := GRPCCall(ctx, conn, method, map[string]string{"x-test": "yes"})
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if rep.Pod != "echo-0" || rep.Method != method || rep.Path != method || rep.Headers["x-test"] != "yes" || rep.Peer == "" {
			t.Errorf("%s: report %+v", method, rep)
		}
	}
	if _, err := GRPCCall(ctx, conn, "/zmesh.echo.Echo/"+FailMethod, nil); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Fail: %v, want FailedPrecondition", err)
	}
}

func TestDelayOn(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP})
	for _, tc := range []struct {
		on   string
		slow bool
	}{
		{"", true},
		{"echo-0", true},
		{"other-0,echo-0", true},
		{"other-0", false},
	} {
		q := url.Values{"delay": {"300ms"}}
		if tc.on != "" {
			q.Set("delay_on", tc.on)
		}
		start := time.Now()
		resp, err := http.Get("http://" + addrs[0] + "/?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if took := time.Since(start); (took >= 300*time.Millisecond) != tc.slow {
			t.Errorf("delay_on=%q: answered after %v, want slow=%v", tc.on, took, tc.slow)
		}
	}
}
