// Package kubesource is the node agent's pod source on Kubernetes: it
// watches the Pods scheduled to its node and every Namespace, feeds the
// agent (nodeagent.Agent) their labels, and writes the pod annotation
// ambient.istio.io/redirection once a pod is captured.
//
// It is the only part of the node agent that uses client-go; the ztunnel
// proxy binary never imports it.
//
// RBAC it needs: get, list and watch on pods and namespaces, and patch on
// pods/status (the annotation is written through the status subresource,
// as Istio's CNI agent does, so that the agent cannot change pod specs).
package kubesource
