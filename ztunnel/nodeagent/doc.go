// Package nodeagent is ztunnel's node agent: it decides which pods on its
// node belong to the ambient mesh, installs in-pod redirection in their
// network namespaces, and hands them to ztunnel over ZDS.
//
// The agent learns pods and namespaces from a source (the controller's
// local manifests, LocalSource, or the Kubernetes API, package kubesource)
// and each pod's network namespace from the CNI plugin; it acts once it has
// both. Label changes enrol and unenrol live pods.
//
// # Restarts
//
// A restarted agent must keep the pods it had captured: their rules are
// left in place and ztunnel must receive them again in the ZDS snapshot.
// It finds their network namespaces in two ways (Daemon.Start):
//
//   - The state directory (NetnsStore): every CNI ADD records uid →
//     CNI_NETNS; the record is used when the namespace still holds the pod's
//     address. Runtimes (containerd, CRI-O) pass bind-mounted paths under
//     /var/run/netns that live as long as the sandbox, so this is exact,
//     cheap, and needs only that directory mounted into the agent.
//   - A search (NetnsFinder) for pods without a usable record (the state
//     was lost, or the pod was captured by an older agent): every namespace
//     under /var/run/netns and every process's /proc/<pid>/ns/net (this one
//     needs hostPID) is entered once and its addresses compared with the
//     pod's status.podIPs, as Istio's CNI agent scans /proc. An address found
//     in two namespaces is ambiguous and not used.
//
// Enrolled pods are restored before the ZDS socket opens, so ztunnel's
// first snapshot from the new agent contains them; the redirection is
// checked, not rebuilt, so no connection sees the rules go. Pods in the mesh
// whose namespace cannot be found are logged as errors and listed by
// Daemon.Lost; pods that left the mesh while the agent was down lose their
// leftover rules.
package nodeagent
