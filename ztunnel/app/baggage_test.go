package app

import (
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

func TestBaggage(t *testing.T) {
	info := &zdsapi.WorkloadInfo{Name: "reviews-v2-5c7d9-x8k2p", Namespace: "bookinfo"}
	tests := []struct {
		name string
		w    *workloadapi.Workload
		want string
	}{
		{"workload not known yet", nil,
			"k8s.cluster.name=Kubernetes,k8s.namespace.name=bookinfo,k8s.pod.name=reviews-v2-5c7d9-x8k2p,service.name=reviews-v2-5c7d9-x8k2p,service.version=latest"},
		{"deployment", &workloadapi.Workload{WorkloadType: workloadapi.WorkloadType_DEPLOYMENT, WorkloadName: "reviews-v2",
			CanonicalName: "reviews", CanonicalRevision: "v2"},
			"k8s.cluster.name=Kubernetes,k8s.namespace.name=bookinfo,k8s.deployment.name=reviews-v2,service.name=reviews,service.version=v2"},
	}
	for _, tt := range tests {
		if got := baggage("Kubernetes", info, tt.w); got != tt.want {
			t.Errorf("%s:\n got  %s\n want %s", tt.name, got, tt.want)
		}
	}
}
