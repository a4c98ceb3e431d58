package cniplugin

import (
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

// FuzzParseArgs: CNI_ARGS comes from the runtime; no input may panic, and
// a valid parse always yields a request the agent can key.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u",
		"K8S_POD_NAME", "=;=", ";;", "IgnoreUnknown=0;X=Y", "K8S_POD_UID==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(s)
		if err != nil {
			return
		}
		if a.Validate() == nil && (a.K8S_POD_UID == "" || !a.IsKubernetesPod()) {
			t.Fatalf("valid args without a uid: %+v", a)
		}
	})
}

// FuzzRequest: the network configuration (stdin) and CNI_ARGS together;
// no input may panic, and every accepted request carries a uid.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"zmesh-cni","prevResult":`+prev100+`}`), "K8S_POD_NAMESPACE=n;K8S_POD_NAME=p;K8S_POD_UID=u")
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"k8s","prevResult":{"ips":[{"version":"4","address":"1.2.3.4/8"}]}}`), "")
	f.Add([]byte(`{"cniVersion":"1.0.0","agent_timeout":"1h"}`), "IgnoreUnknown=1")
	f.Add([]byte(`{}`), "K8S_POD_NAME=p")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		c, pod, err := request(&skel.CmdArgs{ContainerID: "c", Netns: "/run/netns/x", IfName: "eth0", Args: args, StdinData: conf})
		if err != nil {
			return
		}
		if c == nil || c.Timeout <= 0 || c.AgentSocket == "" {
			t.Fatalf("accepted config without defaults: %+v", c)
		}
		if pod != nil && (pod.UID == "" || pod.Name == "" || pod.Namespace == "") {
			t.Fatalf("accepted pod without identity: %+v", pod)
		}
		if _, err := podIPs(c); err != nil {
			// prevResult parsed but cannot convert: ADD reports it, no panic.
			return
		}
		var sink discard
		_ = New(&sink, nil).printResult(c)
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
