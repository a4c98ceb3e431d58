package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// session is one open stream.
type session struct {
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	sendMu sync.Mutex // serialises Send; taken before Client.mu when both are held
}

func (s *session) send(req *discoveryv3.DeltaDiscoveryRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(req)
}

// run keeps a stream open until ctx is done, backing off between attempts.
// A stream that delivered a response and stayed up for Backoff.Max resets
// the backoff; one that fails sooner counts as a failure even if it
// delivered, so a server that crash-loops after its first response, or
// one whose stream breaks on a later message, is not retried in a tight
// loop.
func (c *Client) run(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) {
	failures := 0
	for {
		opened := time.Now()
		healthy, err := c.session(ctx, ads)
		if ctx.Err() != nil {
			return
		}
		if healthy && time.Since(opened) >= c.cfg.Backoff.Max {
			failures = 0
		}
		wait := c.cfg.Backoff.delay(failures)
		failures++
		c.log.Warn("xds stream ended", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one stream: initial requests, then responses and ACKs until
// the stream fails. healthy reports whether any response arrived.
func (c *Client) session(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	md := metadata.MD{}
	if c.cfg.ClusterID != "" {
		md.Set("clusterid", c.cfg.ClusterID)
	}
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return false, fmt.Errorf("getting xds token: %w", err)
		}
		md.Set("authorization", "Bearer "+tok)
	}
	stream, err := ads.DeltaAggregatedResources(metadata.NewOutgoingContext(ctx, md))
	if err != nil {
		return false, fmt.Errorf("opening xds stream: %w", err)
	}
	s := &session{stream: stream}

	// Install the session and build the initial requests in one critical
	// section, so a concurrent Subscribe is either in them or sent after;
	// hold sendMu until they are out so nothing overtakes them (the first
	// request of a type is the only one whose initial versions count).
	s.sendMu.Lock()
	c.mu.Lock()
	c.cur = s
	initial := c.initialRequests()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.cur == s {
			c.cur = nil
		}
		c.mu.Unlock()
	}()
	for _, req := range initial {
		if err := stream.Send(req); err != nil {
			s.sendMu.Unlock()
			return false, fmt.Errorf("sending initial %s request: %w", req.TypeUrl, err)
		}
	}
	s.sendMu.Unlock()
	c.log.Info("xds stream opened")
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			} else if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				err = ctx.Err()
			}
			return healthy, fmt.Errorf("receiving xds response: %w", err)
		}
		healthy = true
		if err := s.send(c.process(resp)); err != nil {
			return healthy, fmt.Errorf("sending xds ack: %w", err)
		}
	}
}

// initialRequests builds one request per type; the caller holds c.mu.
func (c *Client) initialRequests() []*discoveryv3.DeltaDiscoveryRequest {
	node := c.node()
	out := make([]*discoveryv3.DeltaDiscoveryRequest, 0, len(c.cfg.Types))
	for _, tc := range c.cfg.Types {
		t := c.types[tc.TypeURL]
		req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: tc.TypeURL}
		if len(t.held) > 0 {
			req.InitialResourceVersions = make(map[string]string, len(t.held))
			for name, h := range t.held {
				req.InitialResourceVersions[name] = h.version
			}
		}
		if tc.Mode == OnDemand {
			// Subscribing and unsubscribing "*" together means "nothing
			// but what I name".
			req.ResourceNamesSubscribe = append([]string{"*"}, slices.Sorted(maps.Keys(t.keys))...)
			req.ResourceNamesUnsubscribe = []string{"*"}
		}
		out = append(out, req)
	}
	return out
}

func (c *Client) node() *corev3.Node {
	n := c.cfg.Node
	fields := map[string]*structpb.Value{
		"NAME":         structpb.NewStringValue(n.PodName),
		"NAMESPACE":    structpb.NewStringValue(n.Namespace),
		"INSTANCE_IPS": structpb.NewStringValue(n.IP),
		"NODE_NAME":    structpb.NewStringValue(n.NodeName),
	}
	for k, v := range n.Metadata {
		if _, fixed := fields[k]; !fixed {
			fields[k] = structpb.NewStringValue(v)
		}
	}
	return &corev3.Node{Id: n.ID(), Metadata: &structpb.Struct{Fields: fields}}
}
