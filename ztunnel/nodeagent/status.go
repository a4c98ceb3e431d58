package nodeagent

// PodStatus is the agent's view of one pod, for the CNI CHECK and for
// callers that must tell "unknown" from "known but not enrolled".
type PodStatus struct {
	// Known is true once the pod source has reported the pod (the CNI
	// plugin alone only reports its network namespace).
	Known bool
	// NetnsPath is the network namespace the CNI plugin reported; "" if
	// none yet.
	NetnsPath string
	// Wanted is true when the pod's and its namespace's labels put it in
	// the mesh (see Enrolled).
	Wanted bool
	// Enrolled is true while the pod is handed to ztunnel and redirected.
	Enrolled bool
}

// Status returns the agent's view of pod uid; ok is false when the agent
// holds nothing for it. It changes nothing.
func (a *Agent) Status(uid string) (st PodStatus, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pods[uid]
	if ps == nil {
		return PodStatus{}, false
	}
	known := ps.pod.Name != ""
	return PodStatus{
		Known:     known,
		NetnsPath: ps.netnsPath,
		Wanted:    known && Enrolled(ps.pod.Labels, a.namespaces[ps.pod.Namespace]),
		Enrolled:  ps.enrolled,
	}, true
}
