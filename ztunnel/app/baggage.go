package app

import (
	"strings"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// baggage is the W3C baggage a pod's tunnels carry, as Istio's ztunnel
// sends it: cluster, namespace, the owning workload by kind, and the
// canonical service name and revision. w may be nil (not known yet): the
// pod itself is named then.
func baggage(clusterID string, info *zdsapi.WorkloadInfo, w *workloadapi.Workload) string {
	kind, name := "pod", info.GetName()
	service, version := info.GetName(), "latest"
	if w != nil {
		if w.GetWorkloadName() != "" {
			kind, name = strings.ToLower(w.GetWorkloadType().String()), w.GetWorkloadName()
		}
		if w.GetCanonicalName() != "" {
			service = w.GetCanonicalName()
		}
		if w.GetCanonicalRevision() != "" {
			version = w.GetCanonicalRevision()
		}
	}
	return "k8s.cluster.name=" + clusterID +
		",k8s.namespace.name=" + info.GetNamespace() +
		",k8s." + kind + ".name=" + name +
		",service.name=" + service +
		",service.version=" + version
}
