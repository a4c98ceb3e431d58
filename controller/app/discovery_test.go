package app

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/index"
)

func TestDiscoverySelectors(t *testing.T) {
	ns := func(name string, l map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	}
	pod := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	in := &index.Inputs{
		Namespaces: []*corev1.Namespace{ns("a", map[string]string{"team": "x"}), ns("b", map[string]string{"team": "y"}), ns("c", nil)},
		Pods:       []*corev1.Pod{pod("a", "p1"), pod("b", "p2"), pod("c", "p3"), pod("unknown", "p4")},
	}
	for _, tc := range []struct {
		name      string
		selectors []string
		wantPods  []string
	}{
		{"one selector", []string{"team=x"}, []string{"p1"}},
		{"selectors are ORed", []string{"team=x", "team=y"}, []string{"p1", "p2"}},
		{"set expression", []string{"team in (x,y)"}, []string{"p1", "p2"}},
		{"nothing matches", []string{"team=z"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newDiscovery(tc.selectors)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := d.filter(in)
			var got []string
			for _, p := range out.Pods {
				got = append(got, p.Name)
			}
			if len(got) != len(tc.wantPods) {
				t.Fatalf("pods %v, want %v", got, tc.wantPods)
			}
			for i := range got {
				if got[i] != tc.wantPods[i] {
					t.Fatalf("pods %v, want %v", got, tc.wantPods)
				}
			}
		})
	}
	if _, err := newDiscovery([]string{"team in (x"}); err == nil {
		t.Fatal("malformed selector accepted")
	}
	if len(in.Pods) != 4 {
		t.Fatal("filter modified its input")
	}
}
