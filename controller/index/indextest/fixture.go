// Package indextest builds synthetic index.Inputs for benchmarks and load
// tests of the controller (the index itself, the xDS server).
package indextest

import (
	"fmt"
	"slices"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// Spec sizes a synthetic snapshot. Zero fields are allowed (nothing of that
// kind is generated); negative fields are treated as zero.
type Spec struct {
	// Namespaces, all enrolled in ambient mode, named "ns-000"...
	Namespaces int
	// Pods in total, spread evenly over the namespaces; every pod is
	// Running, Ready, captured and owned by a Deployment.
	Pods int
	// Services in total, spread evenly over the namespaces. Service k of a
	// namespace selects that namespace's pods k*PodsPerService up to
	// (k+1)*PodsPerService-1 (fewer if the namespace runs out of pods).
	Services int
	// PodsPerService is the size of each service's selection.
	PodsPerService int
	// AuthorizationPolicies in total: one mesh-wide DENY in the root
	// namespace, the rest alternating between namespace-wide and
	// service-selecting ALLOW policies, spread over the namespaces.
	AuthorizationPolicies int
	// Waypoints: ready waypoint Gateways in the first namespaces, each bound
	// by its namespace's istio.io/use-waypoint label.
	Waypoints int
}

// BenchmarkSpec is the reference size of the controller benchmarks:
// 10,000 pods in 100 namespaces, 1,000 services of 10 pods, 50 policies,
// 4 waypoints (plus a mesh-wide STRICT PeerAuthentication, a PERMISSIVE
// one in every tenth namespace and a port-level one in every fifth).
func BenchmarkSpec() Spec {
	return Spec{
		Namespaces:            100,
		Pods:                  10000,
		Services:              1000,
		PodsPerService:        10,
		AuthorizationPolicies: 50,
		Waypoints:             4,
	}
}

// Inputs generates a snapshot of the given size. The same Spec always gives
// equal Inputs (no randomness); every call allocates fresh objects.
// PeerAuthentications are generated whenever Namespaces > 0.
func Inputs(s Spec) *index.Inputs {
	nsCount := max(s.Namespaces, 0)
	in := &index.Inputs{}
	if nsCount == 0 {
		return in
	}
	perNS := func(total, i int) int {
		n := max(total, 0) / nsCount
		if i < max(total, 0)%nsCount {
			n++
		}
		return n
	}
	podSerial := 0
	for i := 0; i < nsCount; i++ {
		ns := fmt.Sprintf("ns-%03d", i)
		nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:   ns,
			Labels: map[string]string{index.LabelDataplaneMode: index.DataplaneModeAmbient},
		}}
		if i < s.Waypoints {
			nsObj.Labels[index.LabelUseWaypoint] = "waypoint"
			in.Gateways = append(in.Gateways, waypointGateway(ns, i))
		}
		in.Namespaces = append(in.Namespaces, nsObj)

		pods := perNS(s.Pods, i)
		for j := 0; j < pods; j++ {
			group := j
			if s.PodsPerService > 0 {
				group = j / s.PodsPerService
			}
			in.Pods = append(in.Pods, pod(ns, j, group, podSerial))
			podSerial++
		}
		svcs := perNS(s.Services, i)
		for k := 0; k < svcs; k++ {
			in.Services = append(in.Services, service(ns, i, k))
		}
		in.PeerAuthentications = append(in.PeerAuthentications, peerAuthentications(ns, i)...)
	}
	in.PeerAuthentications = append(in.PeerAuthentications, &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: index.DefaultRootNamespace},
		Spec: securityapi.PeerAuthentication{
			Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT},
		},
	})
	for p := 0; p < s.AuthorizationPolicies; p++ {
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, authorizationPolicy(p, nsCount))
	}
	return in
}

func pod(ns string, j, group, serial int) *corev1.Pod {
	app := fmt.Sprintf("svc-%d", group)
	hash := fmt.Sprintf("h%05d", group)
	// Counting up from 10.244.0.0, the simulated pod network.
	n := 10<<24 | 244<<16 + serial
	ip := fmt.Sprintf("%d.%d.%d.%d", n>>24&0xff, n>>16&0xff, n>>8&0xff, n&0xff)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s-%s-%d", app, hash, j),
			Namespace: ns,
			Labels:    map[string]string{"app": app, "version": "v1", "pod-template-hash": hash},
			Annotations: map[string]string{
				index.AnnotationRedirection: index.RedirectionEnabled,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-" + hash,
				UID: "rs", Controller: ptr(true),
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: app,
			NodeName:           fmt.Sprintf("node-%d", serial%10),
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
			}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			PodIPs:     []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

func service(ns string, i, k int) *corev1.Service {
	ip := fmt.Sprintf("10.96.%d.%d", i%256, k%256)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", k), Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector:   map[string]string{"app": fmt.Sprintf("svc-%d", k)},
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9090)},
			},
		},
	}
}

func waypointGateway(ns string, i int) *gatewayv1.Gateway {
	forTraffic := "service"
	if i%2 == 1 {
		forTraffic = "all"
	}
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{
			Name: "waypoint", Namespace: ns,
			Labels: map[string]string{index.LabelWaypointFor: forTraffic},
		},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: index.WaypointGatewayClass,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: index.ListenerProtocolHBONE}},
		},
		Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{
			Type: ptr(gatewayv1.IPAddressType), Value: fmt.Sprintf("10.97.0.%d", i%250+1),
		}}},
	}
}

func peerAuthentications(ns string, i int) []*securityv1.PeerAuthentication {
	var res []*securityv1.PeerAuthentication
	if i%10 == 9 {
		res = append(res, &securityv1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
			Spec: securityapi.PeerAuthentication{
				Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE},
			},
		})
	}
	if i%5 == 0 {
		res = append(res, &securityv1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: "svc-0-ports", Namespace: ns},
			Spec: securityapi.PeerAuthentication{
				Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "svc-0"}},
				PortLevelMtls: map[uint32]*securityapi.PeerAuthentication_MutualTLS{
					9090: {Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE},
				},
			},
		})
	}
	return res
}

func authorizationPolicy(p, nsCount int) *securityv1.AuthorizationPolicy {
	if p == 0 {
		return &securityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "deny-blocked", Namespace: index.DefaultRootNamespace},
			Spec: securityapi.AuthorizationPolicy{
				Action: securityapi.AuthorizationPolicy_DENY,
				Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
					Source: &securityapi.Source{IpBlocks: []string{"192.0.2.0/24"}},
				}}}},
			},
		}
	}
	ns := fmt.Sprintf("ns-%03d", p%nsCount)
	ap := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%d", p), Namespace: ns},
		Spec: securityapi.AuthorizationPolicy{
			Rules: []*securityapi.Rule{{
				From: []*securityapi.Rule_From{{Source: &securityapi.Source{
					Principals: []string{"cluster.local/ns/" + ns + "/sa/*"},
					Namespaces: []string{ns, "istio-system"},
				}}},
				To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Ports: []string{"8080", "9090"}}}},
			}},
		},
	}
	if p%2 == 0 {
		ap.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("svc-%d", p%10)}}
	}
	return ap
}

func ptr[T any](v T) *T { return &v }

// WithPod returns a copy of in whose i-th pod is replaced by an edited copy,
// as an informer replaces an updated object: every other object is the same.
// in is not modified.
func WithPod(in *index.Inputs, i int, edit func(*corev1.Pod)) *index.Inputs {
	c := *in
	c.Pods = slices.Clone(in.Pods)
	c.Pods[i] = in.Pods[i].DeepCopy()
	edit(c.Pods[i])
	return &c
}

// SetReady sets the pod's Ready condition.
func SetReady(p *corev1.Pod, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			p.Status.Conditions[i].Status = status
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: status})
}
