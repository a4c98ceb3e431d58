// Package cniplugin is zmesh's chained CNI plugin (the zmesh-cni binary).
//
// A container runtime runs it after the main network plugin, with the
// standard CNI environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
// CNI_IFNAME, CNI_ARGS, CNI_PATH) and the network configuration, including
// prevResult, on stdin. The plugin does not touch the pod's network itself:
// it tells the node agent, over HTTP on the agent's unix socket, which pod
// (from the Kubernetes CNI_ARGS) lives in which network namespace, and the
// agent decides whether to capture it.
//
//   - ADD posts the pod to the agent and prints prevResult unchanged. It
//     fails when the agent refuses, cannot capture the pod, or cannot be
//     reached: a pod must not start outside the mesh by accident.
//   - DEL tells the agent and never fails (DEL must be idempotent).
//   - CHECK asks the agent whether the pod is captured as it should be.
//
// The agent's side of the protocol is nodeagent.CNIServer; the request and
// response bodies are defined here (wire.go).
package cniplugin
