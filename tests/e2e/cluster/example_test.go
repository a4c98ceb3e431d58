package cluster_test

import (
	"context"
	"fmt"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// A two-node cluster with an echo server in one pod, a request from a pod
// on the other node, and a look at what crossed the inter-node link.
// (Compiled, not run: it needs root and an echo binary.)
func Example() {
	ctx := context.Background()
	c, err := cluster.New(cluster.Options{Nodes: 2})
	if err != nil {
		panic(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Start(ctx); err != nil {
		panic(err)
	}
	client, _ := c.AddPod(ctx, cluster.PodSpec{Name: "sleep", Namespace: "demo", Node: "node1", ServiceAccount: "sleep"})
	server, _ := c.AddPod(ctx, cluster.PodSpec{Name: "httpbin", Namespace: "demo", Node: "node2"})
	_, _ = c.StartProcess(cluster.ProcessSpec{
		Name: "echo-httpbin", Netns: server.Netns, Path: "bin/echo",
		Args: []string{"serve", "--pod", server.Name, "--http", "8080"},
	})
	_ = client.Netns.WaitDial(ctx, server.IP.String()+":8080")

	// Pod objects for the controller's config directory.
	_ = cluster.WriteYAML(c.WorkDir()+"/pods.yaml", client.Object(), server.Object())

	capture, _ := c.CaptureLink(ctx)
	resp, _ := echo.Get(ctx, client.Netns.HTTPClient(5*time.Second), "http://"+server.IP.String()+":8080/", nil)
	segs, _ := capture.Stop()
	fmt.Println(resp.Report.Pod, resp.Report.Peer, cluster.Contains(segs, []byte("GET /")), cluster.Flows(segs))
}
