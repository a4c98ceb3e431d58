package l7

import (
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
	"github.com/zmesh/zmesh/controller/xdsserver"
)

// TestResourcesPublish hands a real Output to an xdsserver store: every
// resource must be accepted under its type URL with a unique name.
func TestResourcesPublish(t *testing.T) {
	data, err := os.ReadFile("testdata/virtualservice.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, in, err := decodeInputs(manifesttest.Scheme(), data, true)
	if err != nil {
		t.Fatal(err)
	}
	out := Build(cfg, in)
	ls, cs := out.ListenerResources(), out.ClusterResources()
	if len(ls) != len(out.Listeners) || len(cs) != len(out.Clusters) || len(ls) == 0 || len(cs) == 0 {
		t.Fatalf("got %d listener and %d cluster resources", len(ls), len(cs))
	}
	authn, err := auth.NewStaticTokens(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: authn, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Update(ListenerTypeURL, ls); err != nil {
		t.Errorf("listeners: %v", err)
	}
	if err := srv.Update(ClusterTypeURL, cs); err != nil {
		t.Errorf("clusters: %v", err)
	}
}
