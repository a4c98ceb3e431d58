package index

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// buildPodWorkloads turns every pod that has an IP and is not terminal into
// a Workload. Pods that are not enrolled are still published (tunnel NONE)
// so that policy and telemetry can name them.
//
// A pod that b.memo holds with the same object and slice memberships gets
// its earlier Workload (the very message) and raises its earlier problems
// again; every other pod is built and recorded in b.memo.
func (b *builder) buildPodWorkloads() {
	for _, p := range b.pods {
		var members []sliceMembership
		if len(b.sliceMembers) > 0 {
			members = b.sliceMembers[objectName{p.Namespace, p.Name}]
		}
		if e, ok := b.memo.lookup(p, members); ok {
			for _, pr := range e.problems {
				b.report(pr)
			}
			if e.workload != nil {
				b.out.Workloads[e.workload.Uid] = e.workload
			}
			continue
		}
		var problems []Problem
		b.capture = &problems
		w := b.podWorkload(p, members)
		b.capture = nil
		if w != nil {
			b.out.Workloads[w.Uid] = w
		}
		b.memo.record(p, members, w, problems)
	}
}

// podWorkload builds the Workload of one pod with its EndpointSlice
// memberships; nil when the pod has no IP or has finished.
func (b *builder) podWorkload(p *corev1.Pod, members []sliceMembership) *workloadapi.Workload {
	ips := podIPStrings(p)
	if len(ips) == 0 || PodTerminal(p) {
		return nil
	}
	w := &workloadapi.Workload{
		Uid:            b.cfg.ClusterID + "//Pod/" + p.Namespace + "/" + p.Name,
		Name:           p.Name,
		Namespace:      p.Namespace,
		Network:        b.networkOf(p.Namespace, p.Labels, ""),
		TrustDomain:    b.cfg.TrustDomain,
		ServiceAccount: p.Spec.ServiceAccountName,
		Node:           p.Spec.NodeName,
		ClusterId:      b.cfg.ClusterID,
		Status:         podStatus(p),
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = serviceAccountDefaultName
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			w.Addresses = append(w.Addresses, a.AsSlice())
		}
	}
	w.WorkloadName, w.WorkloadType = workloadNameAndType(p)
	w.CanonicalName, w.CanonicalRevision = canonicalService(p.Labels, w.WorkloadName)
	if p.Spec.HostNetwork {
		w.NetworkMode = workloadapi.NetworkMode_HOST_NETWORK
	} else if b.podEnrolled(p) && (b.cfg.AssumeCaptured || p.Annotations[AnnotationRedirection] == RedirectionEnabled) {
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	if p.Labels[LabelTunnel] == "http" && !p.Spec.HostNetwork {
		w.TunnelProtocol, w.NativeTunnel = workloadapi.TunnelProtocol_HBONE, true
	}
	w.Services = b.podServices(p, members)
	w.AuthorizationPolicies = b.workloadPolicies(p.Namespace, p.Labels)
	if !b.isWaypointInstance(p.Namespace, p.Labels) {
		w.Waypoint = b.resolveWaypoint(bindWorkload, kindPod, p.Namespace, p.Name, p.Labels, w.ServiceAccount).addr
	}
	return w
}

// PodTerminal reports whether the pod has finished for good (Succeeded or
// Failed): it runs no longer, on any node.
func PodTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podIPStrings returns status.podIPs, or status.podIP when the list is empty.
func podIPStrings(p *corev1.Pod) []string {
	if len(p.Status.PodIPs) > 0 {
		res := make([]string, 0, len(p.Status.PodIPs))
		for _, ip := range p.Status.PodIPs {
			res = append(res, ip.IP)
		}
		return res
	}
	if p.Status.PodIP != "" {
		return []string{p.Status.PodIP}
	}
	return nil
}

// podEnrolled applies Istio's enrolment rule: the pod's own
// istio.io/dataplane-mode label ("ambient" or "none") wins, else its
// namespace's ("ambient").
func (b *builder) podEnrolled(p *corev1.Pod) bool {
	switch p.Labels[LabelDataplaneMode] {
	case DataplaneModeAmbient:
		return true
	case DataplaneModeNone:
		return false
	}
	return b.nsLabels(p.Namespace)[LabelDataplaneMode] == DataplaneModeAmbient
}

// podStatus is HEALTHY iff the pod is Ready and not being deleted.
func podStatus(p *corev1.Pod) workloadapi.WorkloadStatus {
	if p.DeletionTimestamp != nil {
		return workloadapi.WorkloadStatus_UNHEALTHY
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return workloadapi.WorkloadStatus_HEALTHY
			}
			break
		}
	}
	return workloadapi.WorkloadStatus_UNHEALTHY
}

// networkOf picks the network: the explicit one, else the object's
// topology.istio.io/network label, else its namespace's, else the Config's.
func (b *builder) networkOf(ns string, labels map[string]string, explicit string) string {
	if explicit != "" {
		return explicit
	}
	if n := labels[LabelNetwork]; n != "" {
		return n
	}
	if n := b.nsLabels(ns)[LabelNetwork]; n != "" {
		return n
	}
	return b.cfg.Network
}

// workloadNameAndType derives the owning workload from the pod's controller:
// a ReplicaSet named "<deployment>-<pod-template-hash>" is a Deployment, a
// Job named "<cronjob>-<8 to 10 digits>" is a CronJob, another Job is a Job;
// anything else is the pod itself.
func workloadNameAndType(p *corev1.Pod) (string, workloadapi.WorkloadType) {
	ref := metav1.GetControllerOf(p)
	if ref == nil && len(p.OwnerReferences) > 0 {
		ref = &p.OwnerReferences[0]
	}
	if ref == nil {
		return p.Name, workloadapi.WorkloadType_POD
	}
	switch ref.Kind {
	case "ReplicaSet":
		if hash := p.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
			return strings.TrimSuffix(ref.Name, "-"+hash), workloadapi.WorkloadType_DEPLOYMENT
		}
	case "Job":
		if name, ok := cronJobName(ref.Name); ok {
			return name, workloadapi.WorkloadType_CRONJOB
		}
		return ref.Name, workloadapi.WorkloadType_JOB
	}
	return p.Name, workloadapi.WorkloadType_POD
}

// cronJobName strips the "-<scheduled time>" suffix CronJobs give their Jobs.
func cronJobName(job string) (string, bool) {
	i := strings.LastIndexByte(job, '-')
	if i <= 0 {
		return "", false
	}
	digits := job[i+1:]
	if len(digits) < 8 || len(digits) > 10 {
		return "", false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return job[:i], true
}

// canonicalService applies Istio's label precedence for the canonical
// service name and revision.
func canonicalService(labels map[string]string, workloadName string) (string, string) {
	name := firstLabel(labels, LabelCanonicalName, labelAppName, labelApp)
	if name == "" {
		name = workloadName
	}
	rev := firstLabel(labels, LabelCanonicalRevision, labelAppVersion, labelVersion)
	if rev == "" {
		rev = defaultRevision
	}
	return name, rev
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// podServices builds the pod's services map: Services and ServiceEntries of
// its namespace whose selector matches it, and the selector-less Services
// of members, the pod's EndpointSlice memberships.
func (b *builder) podServices(p *corev1.Pod, members []sliceMembership) map[string]*workloadapi.PortList {
	var res map[string]*workloadapi.PortList
	for _, info := range b.selectingServices[p.Namespace] {
		if !selects(info.selector, p.Labels) {
			continue
		}
		if res == nil {
			res = map[string]*workloadapi.PortList{}
		}
		if info.fromServiceEntry {
			res[info.key] = entryPorts(info, nil)
		} else {
			res[info.key] = podPorts(info, p)
		}
	}
	for _, m := range members {
		if res == nil {
			res = map[string]*workloadapi.PortList{}
		}
		res[m.svc.key] = slicePorts(m)
	}
	return res
}

// workloadPolicies lists, sorted and without repeats, the selector-scoped
// AuthorizationPolicies selecting a workload and the policies its
// PeerAuthentications require.
func (b *builder) workloadPolicies(ns string, labels map[string]string) []string {
	res := b.policiesFor(ns, labels)
	res = append(res, b.mtlsPolicies(ns, labels)...)
	if len(res) == 0 {
		return nil
	}
	slices.Sort(res)
	return slices.Compact(res)
}
