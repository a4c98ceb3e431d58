package leader

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/zmesh/zmesh/pkg/kube"
)

func TestNewValidates(t *testing.T) {
	c := &kube.Clients{Kube: kubefake.NewClientset()}
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{Clients: c, Namespace: "ns", Name: "l"}, true},
		{"no clients", Options{Namespace: "ns", Name: "l"}, false},
		{"no name", Options{Clients: c, Namespace: "ns"}, false},
		{"no namespace", Options{Clients: c, Name: "l"}, false},
		{"negative", Options{Clients: c, Namespace: "ns", Name: "l", RetryPeriod: -time.Second}, false},
		{"renew deadline not below lease", Options{Clients: c, Namespace: "ns", Name: "l",
			LeaseDuration: time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}, false},
		{"short durations", Options{Clients: c, Namespace: "ns", Name: "l",
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && e.opts.Identity == "" {
				t.Fatal("no default identity")
			}
		})
	}
}

func TestStatusGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := New(Options{Clients: &kube.Clients{Kube: kubefake.NewClientset()}, Namespace: "ns", Name: "l", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	gauge := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "leader_election_master_status" && len(mf.GetMetric()) == 1 {
				m := mf.GetMetric()[0]
				if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != "l" {
					t.Fatalf("labels %v", m.GetLabel())
				}
				return m.GetGauge().GetValue()
			}
		}
		t.Fatal("gauge not gathered")
		return 0
	}
	if v := gauge(); v != 0 {
		t.Fatalf("gauge before leading = %v", v)
	}
	e.setStatus(1)
	if v := gauge(); v != 1 {
		t.Fatalf("gauge while leading = %v", v)
	}
	e.stoppedLeading()
	if v := gauge(); v != 0 {
		t.Fatalf("gauge after losing = %v", v)
	}
}
