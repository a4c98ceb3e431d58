// Package nodeagent is ztunnel's node agent: it decides which pods on its
// node belong to the ambient mesh, installs in-pod redirection in their
// network namespaces, and hands them to ztunnel over ZDS.
//
// The agent learns pods and namespaces from a source (the controller's
// local manifests, or the Kubernetes API) and each pod's network namespace
// from the CNI plugin; it acts once it has both. Label changes enrol and
// unenrol live pods.
package nodeagent
