package cluster_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// TestControlPlaneStopAndStrays covers the control-plane namespace, the
// SIGKILL path of Process.Stop, and Close killing a process it did not
// start but that runs inside one of its namespaces.
func TestControlPlaneStopAndStrays(t *testing.T) {
	c := cluster.Setup(t, cluster.Options{Nodes: 1, Prefix: testPrefix, ControlPlane: true, StopTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pod, err := c.AddPod(ctx, cluster.PodSpec{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}

	// A pod reaches the control plane, which sees the pod's address.
	l, err := c.ControlPlane().Listen("tcp", net.JoinHostPort(cluster.ControlPlaneIP.String(), "15012"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		accepted <- conn.RemoteAddr().String()
		conn.Close()
	}()
	conn, err := pod.Netns.DialContext(ctx, "tcp", "172.30.0.2:15012")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got := <-accepted; !strings.HasPrefix(got, pod.IP.String()+":") {
		t.Errorf("control plane saw %s, want %s", got, pod.IP)
	}

	// A process that ignores SIGTERM is killed after the stop timeout.
	stubborn, err := c.StartProcess(cluster.ProcessSpec{
		Name: "stubborn", Netns: pod.Netns, Path: "/bin/sh",
		Args: []string{"-c", `trap "" TERM; echo started; sleep 30`},
	})
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(stubborn.Log(), "started") {
		select {
		case <-ctx.Done():
			t.Fatal("stubborn process never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	start := time.Now()
	if err := stubborn.Stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop of a SIGTERM-ignoring process: %v, want a 'killed' error", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("Stop took %v, want about the 300ms stop timeout", d)
	}
	if exited, _ := stubborn.Exited(); !exited {
		t.Error("stubborn process still running after Stop")
	}

	// Waiting for a process that exits at start-up ends at once, with its
	// log, instead of at the deadline.
	failing, err := c.StartProcess(cluster.ProcessSpec{
		Name: "failing", Netns: pod.Netns, Path: "/bin/sh",
		Args: []string{"-c", `echo "bind: address already in use" >&2; exit 3`},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cluster.WaitProcessReady(ctx, failing, pod.Netns.HTTPClient(time.Second), "http://127.0.0.1:1/healthz/ready")
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("WaitProcessReady for a process that exited: %v, want its exit and log", err)
	}
	if ctx.Err() != nil {
		t.Error("WaitProcessReady waited for the deadline")
	}

	// A stray process in a pod namespace goes with Close.
	stray := exec.Command("ip", "netns", "exec", pod.Netns.Name, "sleep", "30")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	strayDone := make(chan struct{})
	go func() { _ = stray.Wait(); close(strayDone) }()
	time.Sleep(100 * time.Millisecond) // let ip exec sleep inside the namespace
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-strayDone:
	case <-time.After(5 * time.Second):
		t.Error("stray process in a pod namespace survived Close")
		_ = stray.Process.Kill()
	}
}
