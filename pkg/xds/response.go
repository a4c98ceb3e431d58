package xds

import (
	"fmt"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// process applies one response and returns the ACK or NACK to send. It
// never panics on malformed input: anything undecodable is a rejection.
func (c *Client) process(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	reply := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
	t := c.types[resp.GetTypeUrl()]
	if t == nil {
		c.log.Warn("xds response for unknown type rejected", "type", resp.GetTypeUrl())
		reply.ErrorDetail = status.New(codes.InvalidArgument, "type not subscribed: "+resp.GetTypeUrl()).Proto()
		return reply
	}
	d := Delta{TypeURL: t.cfg.TypeURL, Removals: resp.GetRemovedResources()}
	var rejected []Rejection
	for _, r := range resp.GetResources() {
		m, err := decode(t.cfg, r)
		if err != nil {
			rejected = append(rejected, Rejection{Name: r.GetName(), Err: err})
			continue
		}
		d.Upserts = append(d.Upserts, Upsert{Name: r.GetName(), Aliases: r.GetAliases(), Version: r.GetVersion(), Message: m})
	}

	c.handlerMu.Lock()
	refused := t.cfg.Handler.HandleDelta(d)
	c.mu.Lock()
	refusedNames := make(map[string]struct{}, len(refused))
	for _, r := range refused {
		refusedNames[r.Name] = struct{}{}
	}
	for _, u := range d.Upserts {
		if _, no := refusedNames[u.Name]; !no {
			t.held[u.Name] = held{version: u.Version, aliases: u.Aliases}
		}
	}
	for _, name := range d.Removals {
		delete(t.held, name)
	}
	if !t.syncedDone {
		t.syncedDone = true
		close(t.synced)
	}
	c.mu.Unlock()
	c.handlerMu.Unlock()

	rejected = append(rejected, refused...)
	if len(rejected) == 0 {
		c.log.Debug("xds ACK", "type", t.cfg.TypeURL, "nonce", resp.GetNonce(),
			"upserts", len(d.Upserts), "removals", len(d.Removals))
		return reply
	}
	var b strings.Builder
	for i, r := range rejected {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", r.Name, r.Err)
	}
	reply.ErrorDetail = status.New(codes.InvalidArgument, b.String()).Proto()
	c.log.Warn("xds NACK", "type", t.cfg.TypeURL, "nonce", resp.GetNonce(), "rejected", len(rejected), "detail", reply.ErrorDetail.Message)
	return reply
}

// decode unpacks one resource into the type's message.
func decode(tc TypeConfig, r *discoveryv3.Resource) (proto.Message, error) {
	if r.GetName() == "" {
		return nil, fmt.Errorf("resource without a name")
	}
	a := r.GetResource()
	if a == nil {
		return nil, fmt.Errorf("resource has no body")
	}
	if a.GetTypeUrl() != tc.TypeURL {
		return nil, fmt.Errorf("body is %q, want %q", a.GetTypeUrl(), tc.TypeURL)
	}
	m := tc.New()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("decoding body: %w", err)
	}
	return m, nil
}
