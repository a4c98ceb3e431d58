package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CNIVersion is the CNI spec version of generated configs and results.
const CNIVersion = "1.0.0"

// ContainerID returns the pod's sandbox id as a runtime would pass it in
// CNI_CONTAINERID: 64 hex digits derived from the pod's uid.
func (p *Pod) ContainerID() string {
	sum := sha256.Sum256([]byte(p.UID))
	return hex.EncodeToString(sum[:])
}

// CNIResult returns the result the main CNI plugin would have produced for
// the pod's network: eth0 in the pod's namespace with the pod IP, gateway
// and default route. Chained plugins receive it as prevResult.
func (p *Pod) CNIResult() map[string]any {
	gw := p.Node.Gateway.String()
	return map[string]any{
		"cniVersion": CNIVersion,
		"interfaces": []any{map[string]any{"name": "eth0", "sandbox": p.Netns.Path}},
		"ips":        []any{map[string]any{"address": p.IP.String() + "/32", "gateway": gw, "interface": 0}},
		"routes":     []any{map[string]any{"dst": "0.0.0.0/0", "gw": gw}},
	}
}

// ChainedConfig returns the stdin a runtime gives a chained plugin for
// pod: plugin's own fields plus cniVersion (if unset), the network name
// and prevResult (the pod's CNIResult). plugin must contain "type".
func ChainedConfig(network string, plugin map[string]any, pod *Pod) ([]byte, error) {
	if _, ok := plugin["type"].(string); !ok {
		return nil, errors.New("cluster: CNI plugin config without a type")
	}
	conf := maps.Clone(plugin)
	if _, ok := conf["cniVersion"]; !ok {
		conf["cniVersion"] = CNIVersion
	}
	conf["name"] = network
	conf["prevResult"] = pod.CNIResult()
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("cluster: CNI config: %w", err)
	}
	return b, nil
}

// CNIRequest is one invocation of a CNI plugin for a pod.
type CNIRequest struct {
	// Plugin is the plugin executable.
	Plugin string
	// Command is ADD, DEL, CHECK or VERSION.
	Command string
	// Config is the network configuration on stdin (see ChainedConfig).
	Config []byte
	// Pod supplies CNI_CONTAINERID, CNI_NETNS and the Kubernetes CNI_ARGS.
	Pod *Pod
	// Env is added to the plugin's environment.
	Env []string
}

// RunCNI runs a CNI plugin as a container runtime would: in the pod's node
// namespace, with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME=eth0,
// CNI_PATH (the plugin's directory) and CNI_ARGS carrying
// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID and
// K8S_POD_UID, the config on stdin. It returns the plugin's stdout (its
// result, or the CNI error object on failure) and an error that includes
// stdout and stderr when the plugin fails.
func (c *Cluster) RunCNI(ctx context.Context, req CNIRequest) ([]byte, error) {
	if req.Plugin == "" || req.Pod == nil {
		return nil, errors.New("cluster: RunCNI needs a plugin and a pod")
	}
	switch req.Command {
	case "ADD", "DEL", "CHECK", "VERSION":
	default:
		return nil, fmt.Errorf("cluster: CNI command %q", req.Command)
	}
	p := req.Pod
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, req.Plugin)
	cmd.Stdin = bytes.NewReader(req.Config)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.Dir = c.WorkDir()
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+req.Command,
		"CNI_CONTAINERID="+p.ContainerID(),
		"CNI_NETNS="+p.Netns.Path,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Dir(req.Plugin),
		"CNI_ARGS="+strings.Join([]string{
			"IgnoreUnknown=1",
			"K8S_POD_NAMESPACE=" + p.Namespace,
			"K8S_POD_NAME=" + p.Name,
			"K8S_POD_INFRA_CONTAINER_ID=" + p.ContainerID(),
			"K8S_POD_UID=" + p.UID,
		}, ";"),
	)
	cmd.Env = append(cmd.Env, req.Env...)
	if err := runInNetns(p.Node.Netns, cmd); err != nil {
		return stdout.Bytes(), fmt.Errorf("cluster: CNI %s %s for pod %s: %w (stdout %q, stderr %q)",
			filepath.Base(req.Plugin), req.Command, p.Key(), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
