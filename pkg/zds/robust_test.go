package zds

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/netns/netnstest"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// rawConn is a hand-driven peer for protocol tests.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
}

func dialRaw(t *testing.T, path string, version zdsapi.Version) *rawConn {
	t.Helper()
	var c net.Conn
	var err error
	waitFor(t, func() bool {
		c, err = net.Dial("unixpacket", path)
		return err == nil
	})
	r := &rawConn{t: t, c: c.(*net.UnixConn)}
	t.Cleanup(func() { _ = r.c.Close() })
	r.send(&zdsapi.ZdsHello{Version: version}, nil)
	return r
}

func (r *rawConn) send(m proto.Message, files []*os.File) {
	r.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendBytes(b, files)
}

func (r *rawConn) sendBytes(b []byte, files []*os.File) {
	r.t.Helper()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := r.c.WriteMsgUnix(b, oob, nil); err != nil {
		r.t.Fatal(err)
	}
}

// readRequest reads one WorkloadRequest and its descriptors (closed at the
// end of the test).
func (r *rawConn) readRequest() (*zdsapi.WorkloadRequest, []*os.File) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	d, err := readDatagram(r.c)
	if d != nil {
		r.t.Cleanup(d.closeFiles)
	}
	if err != nil {
		r.t.Fatalf("read request: %v", err)
	}
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(d.payload, &req); err != nil {
		r.t.Fatal(err)
	}
	return &req, d.files
}

func (r *rawConn) ack(errText string) {
	r.t.Helper()
	r.send(&zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: errText}}}, nil)
}

func (r *rawConn) readAck() string {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	d, err := readDatagram(r.c)
	if err != nil {
		r.t.Fatalf("read ack: %v", err)
	}
	d.closeFiles()
	var resp zdsapi.WorkloadResponse
	if err := proto.Unmarshal(d.payload, &resp); err != nil || resp.GetAck() == nil {
		r.t.Fatalf("bad ack %x: %v", d.payload, err)
	}
	return resp.GetAck().GetError()
}

// expectClosed asserts the peer closes the connection.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	for {
		d, err := readDatagram(r.c)
		if d != nil {
			d.closeFiles()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				r.t.Fatal("connection not closed")
			}
			return
		}
	}
}

func startServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = sockPath(t)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func TestServerRejectsBadHello(t *testing.T) {
	s := startServer(t, ServerConfig{HelloTimeout: time.Second})
	dialRaw(t, s.cfg.Path, zdsapi.Version_NOT_USED).expectClosed()

	r := dialRaw(t, s.cfg.Path, zdsapi.Version_V1)
	r.readRequest() // snapshot_sent: the hello above was fine
	r.ack("")

	garbage := &rawConn{t: t}
	c, err := net.Dial("unixpacket", s.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	garbage.c = c.(*net.UnixConn)
	defer c.Close()
	garbage.sendBytes([]byte{0xff, 0xff, 0xff}, nil)
	garbage.expectClosed()

	silent, err := net.Dial("unixpacket", s.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	(&rawConn{t: t, c: silent.(*net.UnixConn)}).expectClosed() // hello timeout
}

func TestServerReplacesConnectionAndSendsNetns(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zdsr")
	s := startServer(t, ServerConfig{})
	ctx := context.Background()

	first := dialRaw(t, s.cfg.Path, zdsapi.Version_V1)
	if req, _ := first.readRequest(); req.GetSnapshotSent() == nil {
		t.Fatalf("want snapshot_sent, got %v", req)
	}
	first.ack("")

	second := dialRaw(t, s.cfg.Path, zdsapi.Version_V1)
	first.expectClosed()
	if req, _ := second.readRequest(); req.GetSnapshotSent() == nil {
		t.Fatalf("want snapshot_sent, got %v", req)
	}
	second.ack("")

	done := make(chan error, 1)
	go func() { done <- s.AddPod(ctx, "uid-1", info("one"), pod.File) }()
	req, files := second.readRequest()
	if req.GetAdd().GetUid() != "uid-1" || req.GetAdd().GetWorkloadInfo().GetServiceAccount() != "sa-one" {
		t.Fatalf("add = %v", req)
	}
	if len(files) != 1 {
		t.Fatalf("%d descriptors with add", len(files))
	}
	if same, err := netns.Same(files[0], pod.File); err != nil || !same {
		t.Fatalf("descriptor is not the pod's namespace: %v %v", same, err)
	}
	second.ack("")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	go func() { done <- s.DelPod(ctx, "uid-1") }()
	if req, files := second.readRequest(); req.GetDel().GetUid() != "uid-1" || len(files) != 0 {
		t.Fatalf("del = %v (%d fds)", req, len(files))
	}
	second.ack("")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Not a namespace: refused before anything is sent.
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	if err := s.AddPod(ctx, "uid-2", info("two"), devnull); !errors.Is(err, netns.ErrNotNetns) {
		t.Fatalf("AddPod(/dev/null) = %v", err)
	}
}

func TestServerAckTimeoutAndAckErrors(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zdst")
	s := startServer(t, ServerConfig{AckTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	if err := s.AddPod(ctx, "uid-1", info("one"), pod.File); err != nil {
		t.Fatal(err)
	}

	// The replayed add is refused: counted, and the pod stays known.
	r := dialRaw(t, s.cfg.Path, zdsapi.Version_V1)
	if req, _ := r.readRequest(); req.GetAdd().GetUid() != "uid-1" {
		t.Fatalf("want replayed add, got %v", req)
	}
	r.ack("no such pod")
	if req, _ := r.readRequest(); req.GetSnapshotSent() == nil {
		t.Fatalf("want snapshot_sent, got %v", req)
	}
	r.ack("")
	if got := s.Stats().AckErrors; got != 1 {
		t.Fatalf("AckErrors = %d", got)
	}

	// A live add that is never acknowledged times out and ends the connection.
	done := make(chan error, 1)
	go func() { done <- s.AddPod(ctx, "uid-2", info("two"), pod.File) }()
	r.readRequest()
	if err := <-done; !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("AddPod without ack = %v", err)
	}
	r.expectClosed()

	// Both pods are replayed to the next connection.
	r2 := dialRaw(t, s.cfg.Path, zdsapi.Version_V1)
	for _, uid := range []string{"uid-1", "uid-2"} {
		if req, files := r2.readRequest(); req.GetAdd().GetUid() != uid || len(files) != 1 {
			t.Fatalf("want replayed add %s, got %v", uid, req)
		}
		r2.ack("")
	}
	if req, _ := r2.readRequest(); req.GetSnapshotSent() == nil {
		t.Fatalf("want snapshot_sent, got %v", req)
	}
	r2.ack("")
	s.Stop()
	if err := s.AddPod(ctx, "uid-3", info("three"), pod.File); !errors.Is(err, ErrStopped) {
		t.Fatalf("AddPod after Stop = %v", err)
	}
}

// recorder is a Handler that records calls.
type recorder struct {
	calls []string
	snap  map[string]struct{}
}

func (h *recorder) Add(_ context.Context, uid string, _ *zdsapi.WorkloadInfo, ns *os.File) error {
	if err := netns.Verify(ns); err != nil {
		return err
	}
	h.calls = append(h.calls, "add "+uid)
	return nil
}

func (h *recorder) Del(_ context.Context, uid string) error {
	h.calls = append(h.calls, "del "+uid)
	return nil
}

func (h *recorder) SnapshotSent(_ context.Context, in map[string]struct{}) error {
	h.calls = append(h.calls, "snapshot")
	h.snap = in
	return nil
}

func TestClientSurvivesBadDatagrams(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zdsc")
	path := sockPath(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	fds := countFDs(t)

	h := &recorder{}
	cli, err := NewClient(ClientConfig{Path: path, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	_ = ln.SetDeadline(time.Now().Add(wait))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	agent := &rawConn{t: t, c: c}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	d, err := readDatagram(c)
	if err != nil {
		t.Fatal(err)
	}
	var hello zdsapi.ZdsHello
	if err := proto.Unmarshal(d.payload, &hello); err != nil || hello.GetVersion() != zdsapi.Version_V1 {
		t.Fatalf("hello %v: %v", &hello, err)
	}

	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	add := func(uid string) *zdsapi.WorkloadRequest {
		return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid}}}
	}
	del := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: "x"}}}
	bad := []struct {
		name  string
		bytes []byte
		msg   proto.Message
		files []*os.File
		want  string
	}{
		{name: "garbage", bytes: []byte{0x0a, 0xff, 0x01}, want: "undecodable"},
		// An empty message would be a zero-length datagram, which
		// SOCK_SEQPACKET cannot tell from the peer closing; an unknown
		// field (9, varint) decodes to a request without payload.
		{name: "unknown request", bytes: []byte{0x48, 0x01}, want: "empty or unknown"},
		{name: "add without fd", msg: add("a"), want: "carried 0 file descriptors"},
		{name: "add with /dev/null", msg: add("a"), files: []*os.File{devnull}, want: "not a network namespace"},
		{name: "add with two fds", msg: add("a"), files: []*os.File{pod.File, pod.File}, want: "carried 2"},
		{name: "add without uid", msg: add(""), files: []*os.File{pod.File}, want: "without uid"},
		{name: "del with fd", msg: del, files: []*os.File{pod.File}, want: "unexpected 1 file descriptor"},
		{name: "del without uid", msg: &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{}}}, want: "without uid"},
	}
	for _, tc := range bad {
		if tc.msg != nil {
			agent.send(tc.msg, tc.files)
		} else {
			agent.sendBytes(tc.bytes, tc.files)
		}
		if got := agent.readAck(); !strings.Contains(got, tc.want) {
			t.Errorf("%s: ack %q, want it to mention %q", tc.name, got, tc.want)
		}
	}
	agent.send(add("good"), []*os.File{pod.File})
	if got := agent.readAck(); got != "" {
		t.Fatalf("good add: ack %q", got)
	}
	agent.send(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: "kept"}}}, nil)
	if got := agent.readAck(); got != "" {
		t.Fatalf("keep: ack %q", got)
	}
	agent.send(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}, nil)
	if got := agent.readAck(); got != "" {
		t.Fatalf("snapshot: ack %q", got)
	}
	agent.send(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}, nil)
	if got := agent.readAck(); !strings.Contains(got, "duplicate") {
		t.Fatalf("second snapshot_sent: ack %q", got)
	}
	_ = c.Close()
	cli.Stop()
	devnull.Close()
	if strings.Join(h.calls, ",") != "add good,snapshot" {
		t.Fatalf("handler calls %v", h.calls)
	}
	// Every uid the agent named with add or keep counts as in the snapshot,
	// even when its add was refused.
	for _, uid := range []string{"a", "good", "kept"} {
		if _, ok := h.snap[uid]; !ok {
			t.Errorf("%s missing from snapshot %v", uid, h.snap)
		}
	}
	checkNoLeak(t, fds)
}

// A call made while ztunnel is connected but has not said hello yet is
// answered by the replay, not sent twice.
func TestServerCallDuringHelloIsCoveredByReplay(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "zdsh")
	s := startServer(t, ServerConfig{})
	c, err := net.Dial("unixpacket", s.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{t: t, c: c.(*net.UnixConn)}
	t.Cleanup(func() { _ = r.c.Close() })
	waitFor(t, s.Connected)

	done := make(chan error, 1)
	go func() { done <- s.AddPod(context.Background(), "uid-1", info("one"), pod.File) }()
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 1
	})
	r.send(&zdsapi.ZdsHello{Version: zdsapi.Version_V1}, nil)
	if req, _ := r.readRequest(); req.GetAdd().GetUid() != "uid-1" {
		t.Fatalf("want replayed add, got %v", req)
	}
	r.ack("refused")
	if req, _ := r.readRequest(); req.GetSnapshotSent() == nil {
		t.Fatalf("want snapshot_sent, got %v", req)
	}
	r.ack("")
	var ackErr *AckError
	if err := <-done; !errors.As(err, &ackErr) || ackErr.Message != "refused" {
		t.Fatalf("AddPod = %v, want the replay's ack error", err)
	}
	// Nothing else is sent.
	_ = r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if d, err := readDatagram(r.c); err == nil {
		d.closeFiles()
		t.Fatalf("unexpected datagram %x", d.payload)
	}
}
