package l7

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// TestBindingMatchesIndex checks, on every test case, that the services
// given Listeners are exactly those the index binds to a waypoint: the
// binding rules are computed on both sides and must not drift apart.
func TestBindingMatchesIndex(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, "testdata/allow/waypoints.yaml")
	s := manifesttest.Scheme()
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, in, err := decodeInputs(s, data, true)
			if err != nil {
				t.Fatal(err)
			}
			ix := index.Build(index.Config{RootNamespace: cfg.RootNamespace, DomainSuffix: cfg.DomainSuffix}, in)
			var want []string
			for key, svc := range ix.Services {
				if svc.GetWaypoint() != nil && len(svc.GetPorts()) > 0 {
					want = append(want, key)
				}
			}
			var got []string
			for _, l := range Build(cfg, in).Listeners {
				key := l.Name[:strings.LastIndex(l.Name, ":")]
				if !slices.Contains(got, key) {
					got = append(got, key)
				}
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("services with listeners %v, index binds %v", got, want)
			}
		})
	}
}
