package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultAgentTimeout bounds one call to the agent when the configuration
// sets none. The agent itself waits up to about 10 s for its pod source and
// then for ztunnel, so this is longer.
const DefaultAgentTimeout = 60 * time.Second

// Config is the plugin's network configuration (stdin).
type Config struct {
	types.PluginConf

	// AgentSocket is the node agent's unix socket; DefaultAgentSocket if
	// empty.
	AgentSocket string `json:"agent_socket,omitempty"`
	// AgentTimeout is a Go duration ("30s") bounding each call to the
	// agent; DefaultAgentTimeout if empty.
	AgentTimeout string `json:"agent_timeout,omitempty"`

	// Timeout is AgentTimeout parsed.
	Timeout time.Duration `json:"-"`
}

// ParseConfig decodes the network configuration, applies defaults and
// parses prevResult (when present) into PrevResult in the configuration's
// version.
func ParseConfig(stdin []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if c.CNIVersion == "" {
		return nil, errors.New("network config: cniVersion is required")
	}
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultAgentSocket
	}
	c.Timeout = DefaultAgentTimeout
	if c.AgentTimeout != "" {
		d, err := time.ParseDuration(c.AgentTimeout)
		if err != nil {
			return nil, fmt.Errorf("network config: agent_timeout: %w", err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("network config: agent_timeout %q is not positive", c.AgentTimeout)
		}
		c.Timeout = d
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	return &c, nil
}

// PodArgs are the Kubernetes keys of CNI_ARGS. Field names are the keys
// (types.LoadArgs matches them by name).
type PodArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:staticcheck // the CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:staticcheck // the CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:staticcheck // the CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:staticcheck // the CNI_ARGS key
}

// ParseArgs parses CNI_ARGS ("K=V;K2=V2"). Unknown keys are an error unless
// IgnoreUnknown=1 is among them, as the CNI conventions require.
func ParseArgs(s string) (*PodArgs, error) {
	var a PodArgs
	if err := types.LoadArgs(s, &a); err != nil {
		return nil, fmt.Errorf("CNI_ARGS: %w", err)
	}
	return &a, nil
}

// IsKubernetesPod reports whether the runtime named a Kubernetes pod. A
// sandbox without K8S_POD_NAME and K8S_POD_NAMESPACE is not one, and the
// plugin leaves it alone.
func (a *PodArgs) IsKubernetesPod() bool {
	return a.K8S_POD_NAME != "" || a.K8S_POD_NAMESPACE != ""
}

// Validate requires the keys the agent needs to find a Kubernetes pod.
func (a *PodArgs) Validate() error {
	var missing []string
	if a.K8S_POD_NAME == "" {
		missing = append(missing, "K8S_POD_NAME")
	}
	if a.K8S_POD_NAMESPACE == "" {
		missing = append(missing, "K8S_POD_NAMESPACE")
	}
	if a.K8S_POD_UID == "" {
		missing = append(missing, "K8S_POD_UID")
	}
	if len(missing) > 0 {
		return fmt.Errorf("CNI_ARGS lacks %v", missing)
	}
	return nil
}
