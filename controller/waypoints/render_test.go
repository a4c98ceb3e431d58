package waypoints

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

func testDeployer(t *testing.T) *Deployer {
	t.Helper()
	if _, err := New(Options{Clients: &kube.Clients{}, Image: "zmesh/waypoint:test"}); err == nil {
		t.Fatal("New accepted clients without Kube and Gateway")
	}
	d := &Deployer{opts: Options{Image: "zmesh/waypoint:test", TrustDomain: "td.example"}.withDefaults()}
	return d
}

// The deployer and the index must agree on how waypoint objects are
// labelled, or a waypoint's own Service would be bound to itself.
func TestLabelsMatchIndex(t *testing.T) {
	pairs := [][2]string{
		{LabelGatewayName, index.LabelGatewayName},
		{LabelManaged, index.LabelGatewayManaged},
		{ManagedValue, index.GatewayManagedMesh},
		{GatewayClassName, index.WaypointGatewayClass},
		{ListenerProtocolHBONE, index.ListenerProtocolHBONE},
		{LabelWaypointFor, index.LabelWaypointFor},
		{LabelDataplaneMode, index.LabelDataplaneMode},
	}
	for _, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("waypoints uses %q where the index uses %q", p[0], p[1])
		}
	}
	if HBONEPort != index.DefaultHBONEPort {
		t.Errorf("HBONE port %d, index %d", HBONEPort, index.DefaultHBONEPort)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New accepted empty options")
	}
	testDeployer(t)
}

func TestRenderDeploymentContract(t *testing.T) {
	d := testDeployer(t)
	gw := waypointGateway("wp")
	dep := d.renderDeployment(gw)
	if *dep.Name != "wp" || *dep.Namespace != "ns" {
		t.Fatalf("name %s/%s", *dep.Namespace, *dep.Name)
	}
	if dep.Labels[LabelGatewayName] != "wp" || dep.Labels[LabelManaged] != ManagedValue {
		t.Errorf("labels %v", dep.Labels)
	}
	if len(dep.OwnerReferences) != 1 || *dep.OwnerReferences[0].UID != "uid-1" || *dep.OwnerReferences[0].Kind != "Gateway" ||
		*dep.OwnerReferences[0].APIVersion != "gateway.networking.k8s.io/v1" || !*dep.OwnerReferences[0].Controller {
		t.Errorf("owner refs %+v", dep.OwnerReferences)
	}
	tpl := dep.Spec.Template
	if dep.Spec.Selector.MatchLabels[LabelGatewayName] != "wp" || tpl.Labels[LabelGatewayName] != "wp" {
		t.Errorf("selector %v / pod labels %v", dep.Spec.Selector.MatchLabels, tpl.Labels)
	}
	if tpl.Labels[LabelDataplaneMode] != "none" {
		t.Errorf("waypoint pods must not be captured: labels %v", tpl.Labels)
	}
	if *tpl.Spec.ServiceAccountName != "wp" {
		t.Errorf("service account %q", *tpl.Spec.ServiceAccountName)
	}
	c := tpl.Spec.Containers[0]
	if *c.Image != "zmesh/waypoint:test" {
		t.Errorf("image %q", *c.Image)
	}
	wantArgs := []string{"--controller=istiod.istio-system.svc:15012", "--controller-name=istiod.istio-system.svc"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %q, want %q", c.Args, wantArgs)
	}
	d.opts.ExtraArgs = []string{"--otlp-endpoint=http://collector:4318/v1/traces"}
	if args := d.renderDeployment(gw).Spec.Template.Spec.Containers[0].Args; !slices.Equal(args, append(wantArgs, d.opts.ExtraArgs...)) {
		t.Errorf("args with extra args %q", args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env[*e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[*e.Name] = "field:" + *e.ValueFrom.FieldRef.FieldPath
		}
	}
	wantEnv := map[string]string{
		"POD_NAME": "field:metadata.name", "POD_NAMESPACE": "field:metadata.namespace",
		"INSTANCE_IP": "field:status.podIP", "SERVICE_ACCOUNT": "field:spec.serviceAccountName",
		"TRUST_DOMAIN": "td.example", "CLUSTER_ID": "Kubernetes",
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("env %s=%q, want %q", k, env[k], v)
		}
	}
	var ports []int32
	for _, p := range c.Ports {
		ports = append(ports, *p.ContainerPort)
	}
	if !slices.Equal(ports, []int32{15008, 15020, 15021}) {
		t.Errorf("container ports %v", ports)
	}
	pr := c.ReadinessProbe.HTTPGet
	if *pr.Path != "/healthz/ready" || pr.Port.IntValue() != 15021 {
		t.Errorf("readiness %s:%s", *pr.Path, pr.Port.String())
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[*m.Name] = *m.MountPath
	}
	var token, root bool
	for _, v := range tpl.Spec.Volumes {
		switch {
		case v.Projected != nil:
			p := v.Projected.Sources[0].ServiceAccountToken
			token = *p.Audience == "istio-ca" && mounts[*v.Name]+"/"+*p.Path == "/var/run/secrets/tokens/istio-token"
		case v.ConfigMap != nil:
			root = *v.ConfigMap.Name == "istio-ca-root-cert" && mounts[*v.Name] == "/var/run/secrets/istio"
		}
	}
	if !token || !root {
		t.Errorf("token volume ok=%v, root cert volume ok=%v (mounts %v)", token, root, mounts)
	}
}

func TestRenderService(t *testing.T) {
	svc := renderService(waypointGateway("wp"))
	if svc.Spec.Selector[LabelGatewayName] != "wp" || len(svc.Spec.Selector) != 1 {
		t.Errorf("selector %v", svc.Spec.Selector)
	}
	if *svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("type %s", *svc.Spec.Type)
	}
	var got []string
	for _, p := range svc.Spec.Ports {
		got = append(got, fmt.Sprintf("%s/%s/%d->%s", *p.Name, *p.AppProtocol, *p.Port, p.TargetPort.String()))
	}
	want := []string{"status-port/tcp/15021->15021", "mesh/hbone/15008->15008"}
	if !slices.Equal(got, want) {
		t.Errorf("ports %v, want %v", got, want)
	}
	sa := renderServiceAccount(waypointGateway("wp"))
	if *sa.Name != "wp" || sa.Labels[LabelManaged] != ManagedValue || len(sa.OwnerReferences) != 1 {
		t.Errorf("service account %+v", sa)
	}
}

func TestDesiredGatewayStatus(t *testing.T) {
	d := testDeployer(t)
	gw := waypointGateway("wp")
	svc := func(ips ...string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{ClusterIPs: ips}}
	}
	cases := []struct {
		name       string
		v          verdict
		svc        *corev1.Service
		deployErr  string
		accepted   string
		programmed string // reason
		addrs      []string
	}{
		{"invalid", verdict{reason: gatewayv1.GatewayReasonListenersNotValid, message: "x"}, nil, "", "False/ListenersNotValid", "False/Invalid", nil},
		{"no cluster IP yet", verdict{ok: true}, svc(), "", "True/Accepted", "False/AddressNotAssigned", nil},
		{"deploy failed", verdict{ok: true}, nil, "quota", "True/Accepted", "False/NoResources", nil},
		{"programmed", verdict{ok: true}, svc("10.96.0.9"), "", "True/Accepted", "True/Programmed", []string{"10.96.0.9"}},
		{"dual stack", verdict{ok: true}, svc("10.96.0.9", "fd00::9"), "", "True/Accepted", "True/Programmed", []string{"10.96.0.9", "fd00::9"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := d.desiredGatewayStatus(gw, tc.v, tc.svc, tc.deployErr)
			get := func(typ string) string {
				c := findCondition(st.conditions, typ)
				if c == nil {
					return "missing"
				}
				if c.ObservedGeneration != gw.Generation {
					t.Errorf("%s observedGeneration %d", typ, c.ObservedGeneration)
				}
				return string(c.Status) + "/" + c.Reason
			}
			if a := get("Accepted"); a != tc.accepted {
				t.Errorf("Accepted %s, want %s", a, tc.accepted)
			}
			if p := get("Programmed"); p != tc.programmed {
				t.Errorf("Programmed %s, want %s", p, tc.programmed)
			}
			if !slices.Equal(st.addresses, tc.addrs) {
				t.Errorf("addresses %v, want %v", st.addresses, tc.addrs)
			}
			// A Gateway that carries exactly this status needs no write.
			cur := gw.DeepCopy()
			cur.Status.Conditions = slices.Clone(st.conditions)
			for _, a := range st.addresses {
				cur.Status.Addresses = append(cur.Status.Addresses, gatewayv1.GatewayStatusAddress{Value: a})
			}
			if !statusCurrent(cur, st) {
				t.Error("statusCurrent is false for a Gateway carrying the status")
			}
			if statusCurrent(gw, st) {
				t.Error("statusCurrent is true for a Gateway without status")
			}
			cur.Status.Conditions[0].ObservedGeneration--
			if statusCurrent(cur, st) {
				t.Error("statusCurrent is true for a condition of an older generation")
			}
		})
	}
}
