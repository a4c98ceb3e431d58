package l7

import (
	"encoding/json"
	"fmt"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

type validator interface{ ValidateAll() error }

// validateOutput runs protoc-gen-validate over every resource and every
// typed config nested in it (Any fields are not followed by ValidateAll).
func validateOutput(out *Output) error {
	check := func(what string, m proto.Message) error {
		v, ok := m.(validator)
		if !ok {
			return fmt.Errorf("%s: %T has no ValidateAll", what, m)
		}
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	unpack := func(what string, a *anypb.Any) (proto.Message, error) {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return m, check(what, m)
	}
	for _, l := range out.Listeners {
		if err := check(l.Name, l); err != nil {
			return err
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				m, err := unpack(l.Name+" "+f.Name, f.GetTypedConfig())
				if err != nil {
					return err
				}
				hcm, ok := m.(*hcmv3.HttpConnectionManager)
				if !ok {
					continue
				}
				for _, hf := range hcm.HttpFilters {
					if _, err := unpack(l.Name+" "+hf.Name, hf.GetTypedConfig()); err != nil {
						return err
					}
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.Routes {
						for k, a := range r.TypedPerFilterConfig {
							if _, err := unpack(l.Name+" route "+r.Name+" "+k, a); err != nil {
								return err
							}
						}
					}
				}
			}
		}
	}
	for _, c := range out.Clusters {
		if err := check(c.Name, c); err != nil {
			return err
		}
	}
	return nil
}

// TestRefuseAllJWKS: the key set an invalid rule's issuer gets is one the
// waypoint accepts (so the listener is not refused), and holds a public
// key only.
func TestRefuseAllJWKS(t *testing.T) {
	if err := checkJWKS(refuseAllJWKS); err != nil {
		t.Fatalf("the waypoint would refuse the key set: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(refuseAllJWKS), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || !set.Keys[0].Valid() {
		t.Fatalf("key set %+v: want one valid public key", set.Keys)
	}
}
