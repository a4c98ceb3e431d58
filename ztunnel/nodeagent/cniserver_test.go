package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/zmesh/zmesh/ztunnel/cniplugin"
)

// serverEnv runs a CNIServer over the real agent harness and a local
// source; the plugin library is called in-process.
type serverEnv struct {
	h      *agentHarness
	srv    *CNIServer
	socket string
	dir    string
}

func newServerEnv(t *testing.T, podWait time.Duration) *serverEnv {
	t.Helper()
	h := newAgentHarness(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "m.yaml"), docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"),
		podYAML("web", "demo", "u-web", "n1", "")))
	src, err := NewLocalSource(LocalSourceConfig{Dir: dir, NodeName: "n1", Sink: h.agent, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	socket := filepath.Join(t.TempDir(), "run", "cni.sock")
	srv, err := NewCNIServer(CNIServerConfig{Path: socket, Agent: h.agent, Pods: src, Redirect: h.rd, PodWait: podWait})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &serverEnv{h: h, srv: srv, socket: socket, dir: dir}
}

func (e *serverEnv) args(uid, name, netnsPath string) *skel.CmdArgs {
	return &skel.CmdArgs{
		ContainerID: "c0ffee", Netns: netnsPath, IfName: "eth0",
		Args:      "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=" + name + ";K8S_POD_UID=" + uid,
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"k8s","type":"zmesh-cni","agent_socket":"` + e.socket + `"}`),
	}
}

func TestCNIServerFailsClosedWhenCaptureFails(t *testing.T) {
	e := newServerEnv(t, time.Second)
	var out bytes.Buffer
	err := cniplugin.New(&out, nil).Add(e.args("u-web", "web", "/run/netns/zmesh-does-not-exist"))
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrInternal || !strings.Contains(ce.Details, "enrol") {
		t.Fatalf("ADD with an unusable netns: %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("failed ADD printed a result: %s", out.Bytes())
	}
	if e.h.agent.IsEnrolled("u-web") {
		t.Fatal("enrolled")
	}
}

func TestCNIServerRejectsBadRequests(t *testing.T) {
	e := newServerEnv(t, time.Second)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}}}
	tests := []struct {
		method, path, body string
		status             int
	}{
		{http.MethodPost, cniplugin.PathAdd, `not json`, http.StatusBadRequest},
		{http.MethodPost, cniplugin.PathAdd, `{"name":"web"}`, http.StatusBadRequest},
		{http.MethodPost, cniplugin.PathAdd, `{"uid":"u-web"}`, http.StatusBadRequest},
		{http.MethodPost, cniplugin.PathCheck, `{"uid":"u-web"}`, http.StatusBadRequest},
		{http.MethodGet, cniplugin.PathAdd, ``, http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/cni/other", `{}`, http.StatusNotFound},
		{http.MethodPost, cniplugin.PathDel, `{"uid":"never-seen"}`, http.StatusOK},
		{http.MethodPost, cniplugin.PathCheck, `{"uid":"never-seen","netns":"/x"}`, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, "http://agent"+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s %s: %d, want %d", tt.method, tt.path, tt.body, resp.StatusCode, tt.status)
		}
	}
}

func TestCNIServerStopEndsWaitingAdd(t *testing.T) {
	e := newServerEnv(t, time.Minute)
	errc := make(chan error, 1)
	go func() {
		var out bytes.Buffer
		errc <- cniplugin.New(&out, nil).Add(e.args("u-unknown", "nobody", "/run/netns/x"))
	}()
	time.Sleep(200 * time.Millisecond) // the ADD is now waiting for the source
	start := time.Now()
	e.srv.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	select {
	case err := <-errc:
		var ce *types.Error
		if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater {
			t.Fatalf("ADD after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ADD still running after Stop")
	}
	// A second server may take over the socket Stop left behind.
	srv2, err := NewCNIServer(CNIServerConfig{Path: e.socket, Agent: e.h.agent})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	srv2.Stop()
}

func TestCNIServerRefusesSecondServerOnLiveSocket(t *testing.T) {
	e := newServerEnv(t, time.Second)
	srv2, err := NewCNIServer(CNIServerConfig{Path: e.socket, Agent: e.h.agent})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(); err == nil {
		srv2.Stop()
		t.Fatal("second server started on a live socket")
	}
	if _, err := NewCNIServer(CNIServerConfig{}); err == nil {
		t.Fatal("server without an agent accepted")
	}
}
