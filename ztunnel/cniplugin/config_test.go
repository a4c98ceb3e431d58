package cniplugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
		k8s     bool
		valid   bool
		uid     string
	}{
		{"empty", "", false, false, false, ""},
		{"full", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1", false, true, true, "u-1"},
		{"unknown key without IgnoreUnknown", "K8S_POD_NAME=p;FOO=bar", true, false, false, ""},
		{"unknown key with IgnoreUnknown", "IgnoreUnknown=true;FOO=bar;K8S_POD_NAME=p;K8S_POD_NAMESPACE=n;K8S_POD_UID=x", false, true, true, "x"},
		{"missing uid", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=n", false, true, false, ""},
		{"only namespace", "K8S_POD_NAMESPACE=n", false, true, false, ""},
		{"pair without =", "K8S_POD_NAME", true, false, false, ""},
		{"bad IgnoreUnknown", "IgnoreUnknown=maybe", true, false, false, ""},
		{"value with = rejected", "K8S_POD_NAME=a=b;K8S_POD_NAMESPACE=n;K8S_POD_UID=u", true, false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseArgs(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if a.IsKubernetesPod() != tt.k8s {
				t.Errorf("IsKubernetesPod = %v", a.IsKubernetesPod())
			}
			if (a.Validate() == nil) != tt.valid {
				t.Errorf("Validate = %v", a.Validate())
			}
			if string(a.K8S_POD_UID) != tt.uid {
				t.Errorf("uid %q", a.K8S_POD_UID)
			}
		})
	}
}

const prev100 = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],` +
	`"ips":[{"address":"10.244.1.5/32","gateway":"10.244.1.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}]}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		socket  string
		timeout time.Duration
		ips     []string
	}{
		{"defaults", `{"cniVersion":"1.0.0","name":"k8s","type":"zmesh-cni"}`, "", DefaultAgentSocket, DefaultAgentTimeout, nil},
		{"socket and timeout", `{"cniVersion":"1.0.0","name":"k8s","type":"zmesh-cni","agent_socket":"/tmp/a.sock","agent_timeout":"5s"}`, "", "/tmp/a.sock", 5 * time.Second, nil},
		{"prevResult 1.0.0", `{"cniVersion":"1.0.0","name":"k8s","type":"zmesh-cni","prevResult":` + prev100 + `}`, "", DefaultAgentSocket, DefaultAgentTimeout, []string{"10.244.1.5"}},
		{"prevResult 0.4.0", `{"cniVersion":"0.4.0","name":"k8s","type":"zmesh-cni","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.244.1.6/32"}]}}`, "", DefaultAgentSocket, DefaultAgentTimeout, []string{"10.244.1.6"}},
		{"no version", `{"name":"k8s","type":"zmesh-cni"}`, "cniVersion", "", 0, nil},
		{"bad timeout", `{"cniVersion":"1.0.0","name":"k8s","agent_timeout":"soon"}`, "agent_timeout", "", 0, nil},
		{"negative timeout", `{"cniVersion":"1.0.0","name":"k8s","agent_timeout":"-1s"}`, "not positive", "", 0, nil},
		{"not JSON", `cniVersion: 1.0.0`, "network config", "", 0, nil},
		{"bad prevResult", `{"cniVersion":"1.0.0","name":"k8s","prevResult":{"ips":"nope"}}`, "prevResult", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.AgentSocket != tt.socket || c.Timeout != tt.timeout {
				t.Errorf("socket %q timeout %v", c.AgentSocket, c.Timeout)
			}
			ips, err := podIPs(c)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(ips, ",") != strings.Join(tt.ips, ",") {
				t.Errorf("ips %v, want %v", ips, tt.ips)
			}
		})
	}
}

// TestPrintResultPassesPrevResultThrough checks that ADD's output is
// prevResult in the configuration's version, and an empty result when the
// plugin is not chained.
func TestPrintResultPassesPrevResultThrough(t *testing.T) {
	tests := []struct {
		name, conf string
		wantIPs    int
		version    string
	}{
		{"1.0.0", `{"cniVersion":"1.0.0","name":"k8s","prevResult":` + prev100 + `}`, 1, "1.0.0"},
		{"0.4.0", `{"cniVersion":"0.4.0","name":"k8s","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.244.1.6/32"}]}}`, 1, "0.4.0"},
		{"no prevResult", `{"cniVersion":"1.0.0","name":"k8s"}`, 0, "1.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := New(&out, nil).printResult(c); err != nil {
				t.Fatal(err)
			}
			var got struct {
				CNIVersion string            `json:"cniVersion"`
				IPs        []json.RawMessage `json:"ips"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, out.Bytes())
			}
			if got.CNIVersion != tt.version || len(got.IPs) != tt.wantIPs {
				t.Errorf("result %s", out.Bytes())
			}
		})
	}
}
