package xds

import (
	"errors"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

const (
	addressType = "type.googleapis.com/istio.workload.Address"
	authzType   = "type.googleapis.com/istio.security.Authorization"
)

// offlineClient is a Client that is never started: process is driven
// directly with responses.
func offlineClient(t testing.TB, h Handler) *Client {
	t.Helper()
	c, err := New(Config{
		Address: "passthrough:///unused",
		Types: []TypeConfig{
			{TypeURL: addressType, New: func() proto.Message { return new(workloadapi.Address) }, Handler: h},
			{TypeURL: authzType, New: func() proto.Message { return new(security.Authorization) }, Handler: h, Mode: OnDemand},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestProcessRejectsPerResource(t *testing.T) {
	var got Delta
	c := offlineClient(t, HandlerFunc(func(d Delta) []Rejection {
		got = d
		for _, u := range d.Upserts {
			if u.Name == "refused" {
				return []Rejection{{Name: u.Name, Err: errors.New("no thanks")}}
			}
		}
		return nil
	}))
	good := &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: "good"}}}
	resp := &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl: addressType,
		Nonce:   "7",
		Resources: []*discoveryv3.Resource{
			{Name: "good", Version: "v1", Aliases: []string{"net/1.2.3.4"}, Resource: mustAny(t, good)},
			{Name: "wrong-type", Version: "v1", Resource: mustAny(t, &security.Authorization{Name: "x"})},
			{Name: "garbage", Version: "v1", Resource: &anypb.Any{TypeUrl: addressType, Value: []byte{0xff, 0xff, 0xff}}},
			{Name: "empty", Version: "v1"},
			{Name: "refused", Version: "v1", Resource: mustAny(t, good)},
		},
		RemovedResources: []string{"gone"},
	}
	c.types[addressType].held["gone"] = held{version: "v0"}
	reply := c.process(resp)
	if reply.ResponseNonce != "7" || reply.TypeUrl != addressType {
		t.Fatalf("reply %v", reply)
	}
	if reply.ErrorDetail == nil {
		t.Fatal("expected a NACK")
	}
	for _, name := range []string{"wrong-type", "garbage", "empty", "refused"} {
		if !strings.Contains(reply.ErrorDetail.Message, name+":") {
			t.Errorf("error_detail %q does not name %s", reply.ErrorDetail.Message, name)
		}
	}
	if strings.Contains(reply.ErrorDetail.Message, "good") {
		t.Errorf("error_detail names the good resource: %q", reply.ErrorDetail.Message)
	}
	if len(got.Upserts) != 2 || got.Upserts[0].Name != "good" || !proto.Equal(got.Upserts[0].Message, good) ||
		got.Upserts[0].Aliases[0] != "net/1.2.3.4" || len(got.Removals) != 1 {
		t.Fatalf("handler saw %+v", got)
	}
	h := c.types[addressType].held
	if _, ok := h["good"]; !ok || len(h) != 1 {
		t.Fatalf("held %v, want only good", h)
	}
	select {
	case <-c.Synced(addressType):
	default:
		t.Fatal("not synced after a response")
	}

	// An all-good response is ACKed.
	resp = &discoveryv3.DeltaDiscoveryResponse{TypeUrl: addressType, Nonce: "8",
		Resources: []*discoveryv3.Resource{{Name: "good", Version: "v2", Resource: mustAny(t, good)}}}
	if reply := c.process(resp); reply.ErrorDetail != nil || reply.ResponseNonce != "8" {
		t.Fatalf("want ACK, got %v", reply)
	}
	// A type nobody asked for is NACKed whole.
	if reply := c.process(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/other", Nonce: "9"}); reply.ErrorDetail == nil {
		t.Fatal("want NACK for unknown type")
	}
}

func TestInitialRequests(t *testing.T) {
	c := offlineClient(t, HandlerFunc(func(Delta) []Rejection { return nil }))
	c.cfg.Node = Node{IP: "10.0.0.9", PodName: "ztunnel-x", Namespace: "istio-system", NodeName: "node1"}
	c.types[addressType].held["a"] = held{version: "v1"}
	c.types[authzType].keys["ns/p"] = struct{}{}
	reqs := c.initialRequests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	w, od := reqs[0], reqs[1]
	if w.Node.GetId() != "ztunnel~10.0.0.9~ztunnel-x.istio-system~istio-system.svc.cluster.local" {
		t.Errorf("node id %q", w.Node.GetId())
	}
	md := w.Node.GetMetadata().GetFields()
	for k, v := range map[string]string{"NAME": "ztunnel-x", "NAMESPACE": "istio-system", "INSTANCE_IPS": "10.0.0.9", "NODE_NAME": "node1"} {
		if md[k].GetStringValue() != v {
			t.Errorf("metadata %s = %q", k, md[k].GetStringValue())
		}
	}
	if len(w.ResourceNamesSubscribe) != 0 || w.InitialResourceVersions["a"] != "v1" {
		t.Errorf("wildcard request %v", w)
	}
	if strings.Join(od.ResourceNamesSubscribe, ",") != "*,ns/p" || strings.Join(od.ResourceNamesUnsubscribe, ",") != "*" {
		t.Errorf("on-demand request %v", od)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if d := b.delay(n); d < want/2 || d >= want {
				t.Fatalf("delay(%d) = %v, want in [%v, %v)", n, d, want/2, want)
			}
		}
	}
	if d := b.delay(1 << 20); d > time.Second {
		t.Fatalf("uncapped: %v", d)
	}
}

// FuzzProcessResponse feeds arbitrary bytes, decoded as a response, to the
// client's response handling: it must never panic.
func FuzzProcessResponse(f *testing.F) {
	w, _ := anypb.New(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: "u", Addresses: [][]byte{{10, 0, 0, 1}}}}})
	p, _ := anypb.New(&security.Authorization{Name: "p", Namespace: "ns"})
	for _, seed := range []*discoveryv3.DeltaDiscoveryResponse{
		{TypeUrl: addressType, Nonce: "1", Resources: []*discoveryv3.Resource{{Name: "u", Version: "1", Resource: w}}, RemovedResources: []string{"x"}},
		{TypeUrl: authzType, Nonce: "2", Resources: []*discoveryv3.Resource{{Name: "ns/p", Resource: p}, {Name: "bad", Resource: w}}},
		{TypeUrl: addressType, Resources: []*discoveryv3.Resource{{Name: "", Resource: &anypb.Any{TypeUrl: addressType, Value: []byte{0x0a, 0x80}}}}},
	} {
		b, err := proto.Marshal(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp discoveryv3.DeltaDiscoveryResponse
		if err := proto.Unmarshal(data, &resp); err != nil {
			return
		}
		c := offlineClient(t, HandlerFunc(func(d Delta) []Rejection {
			for _, u := range d.Upserts {
				_ = proto.Size(u.Message)
			}
			return nil
		}))
		reply := c.process(&resp)
		if reply == nil || reply.ResponseNonce != resp.GetNonce() {
			t.Fatalf("bad reply %v", reply)
		}
	})
}
