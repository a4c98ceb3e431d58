package cniplugin

// HTTP paths of the node agent's CNI endpoint. Every request is a POST
// with a JSON PodRequest body.
const (
	PathAdd   = "/v1/cni/add"
	PathDel   = "/v1/cni/del"
	PathCheck = "/v1/cni/check"
)

// DefaultAgentSocket is where the node agent listens for the plugin.
const DefaultAgentSocket = "/var/run/ztunnel/cni.sock"

// PodRequest is the body of every request from the plugin to the agent.
type PodRequest struct {
	// UID is K8S_POD_UID: the key the agent matches against its pod source.
	UID string `json:"uid"`
	// Name and Namespace are K8S_POD_NAME and K8S_POD_NAMESPACE.
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Netns is CNI_NETNS, the path of the pod's network namespace (may be
	// empty on DEL).
	Netns string `json:"netns,omitempty"`
	// ContainerID is CNI_CONTAINERID (the sandbox id).
	ContainerID string `json:"containerID"`
	// InfraContainerID is K8S_POD_INFRA_CONTAINER_ID when the runtime sets it.
	InfraContainerID string `json:"infraContainerID,omitempty"`
	// IfName is CNI_IFNAME.
	IfName string `json:"ifName,omitempty"`
	// IPs are the pod's addresses from prevResult, without prefix length.
	IPs []string `json:"ips,omitempty"`
}

// Response is the agent's answer. A 2xx status means success; any other
// status carries the reason in Error.
type Response struct {
	// Enrolled reports whether the pod is captured after the call.
	Enrolled bool `json:"enrolled"`
	// Error explains a failure.
	Error string `json:"error,omitempty"`
}
