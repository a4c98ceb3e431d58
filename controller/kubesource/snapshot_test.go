package kubesource

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/zmesh/zmesh/controller/index"
)

// TestVerdictCacheFollowsTheStore checks that validation is remembered per
// object version and that the caches hold only what the store holds: a
// relist (every object replaced by an equal copy) must not leave the old
// objects behind.
func TestVerdictCacheFollowsTheStore(t *testing.T) {
	validated := map[string]int{}
	r := &recorder{}
	s, err := New(Options{
		Clients:  fakeClients(nil),
		OnChange: r.onChange,
		Validate: func(o runtime.Object) error {
			p := o.(interface{ GetName() string })
			validated[p.GetName()]++
			if p.GetName() == "bad" {
				return &index.InvalidError{Reasons: []string{"bad on purpose"}}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	s.followed = []followed{{kind: kind{name: "Pod"}, store: store}}
	names := []string{"a", "b", "bad"}
	for _, n := range names {
		p := pod("ns", n)
		p.ResourceVersion = "1"
		if err := store.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, wantPods, wantProblems, wantCached int, wantValidated map[string]int) {
		t.Helper()
		in, problems := s.snapshot()
		if len(in.Pods) != wantPods || len(problems) != wantProblems {
			t.Errorf("%s: %d pods and %d problems, want %d and %d", step, len(in.Pods), len(problems), wantPods, wantProblems)
		}
		if len(s.seen) != wantCached || len(s.verdicts) != wantCached {
			t.Errorf("%s: %d objects and %d verdicts cached, want %d", step, len(s.seen), len(s.verdicts), wantCached)
		}
		if fmt.Sprint(validated) != fmt.Sprint(wantValidated) {
			t.Errorf("%s: validated %v, want %v", step, validated, wantValidated)
		}
	}
	check("first", 2, 1, 3, map[string]int{"a": 1, "b": 1, "bad": 1})
	check("unchanged", 2, 1, 3, map[string]int{"a": 1, "b": 1, "bad": 1})
	for i := range 5 {
		for _, o := range store.List() {
			if err := store.Update(o.(runtime.Object).DeepCopyObject()); err != nil {
				t.Fatal(err)
			}
		}
		check(fmt.Sprintf("relist %d", i), 2, 1, 3, map[string]int{"a": 1, "b": 1, "bad": 1})
	}
	b := pod("ns", "b")
	b.ResourceVersion = "2"
	if err := store.Update(b); err != nil {
		t.Fatal(err)
	}
	check("b changed", 2, 1, 3, map[string]int{"a": 1, "b": 2, "bad": 1})
	if err := store.Delete(b); err != nil {
		t.Fatal(err)
	}
	check("b deleted", 1, 1, 2, map[string]int{"a": 1, "b": 2, "bad": 1})
	if !errors.Is(s.seen[mustGet(t, store, "ns/bad")].v.err, s.verdicts[objKey{"Pod", "ns", "bad"}].err) {
		t.Error("the object cache and the verdicts disagree on ns/bad")
	}
}

func mustGet(t *testing.T, store cache.Store, key string) runtime.Object {
	t.Helper()
	o, ok, err := store.GetByKey(key)
	if err != nil || !ok {
		t.Fatalf("store has no %s: %v", key, err)
	}
	return o.(runtime.Object)
}
