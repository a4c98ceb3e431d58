package kubesource

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// annotationLastApplied is kubectl's copy of the whole applied manifest.
const annotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// transform trims an object before the informer caches it. It modifies the
// freshly decoded object in place (client-go hands it over before anyone
// else sees it) and is idempotent, as cache.TransformFunc must be.
func transform(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[annotationLastApplied] != "" {
			trimmed := make(map[string]string, len(a)-1)
			for k, v := range a {
				if k != annotationLastApplied {
					trimmed[k] = v
				}
			}
			m.SetAnnotations(trimmed)
		}
	}
	if p, ok := obj.(*corev1.Pod); ok {
		trimPod(p)
	}
	return obj, nil
}

// trimPod keeps what the controller reads of a pod and drops the rest:
//   - metadata (less managedFields and the last-applied annotation), which
//     keeps uid, labels, annotations, owner references and deletionTimestamp;
//   - spec.nodeName, serviceAccountName, hostNetwork, and for each container
//     and init container its name, ports and restartPolicy;
//   - status.phase, conditions (type and status), podIP(s), hostIP(s).
//
// Readers of Source.Pod and of the snapshots see only these fields.
func trimPod(p *corev1.Pod) {
	spec := corev1.PodSpec{
		NodeName:           p.Spec.NodeName,
		ServiceAccountName: p.Spec.ServiceAccountName,
		HostNetwork:        p.Spec.HostNetwork,
		Containers:         trimContainers(p.Spec.Containers),
		InitContainers:     trimContainers(p.Spec.InitContainers),
	}
	status := corev1.PodStatus{
		Phase:   p.Status.Phase,
		PodIP:   p.Status.PodIP,
		PodIPs:  p.Status.PodIPs,
		HostIP:  p.Status.HostIP,
		HostIPs: p.Status.HostIPs,
	}
	if len(p.Status.Conditions) > 0 {
		status.Conditions = make([]corev1.PodCondition, len(p.Status.Conditions))
		for i, c := range p.Status.Conditions {
			status.Conditions[i] = corev1.PodCondition{Type: c.Type, Status: c.Status}
		}
	}
	p.Spec, p.Status = spec, status
}

func trimContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
	}
	return out
}
