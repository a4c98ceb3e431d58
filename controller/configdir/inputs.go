package configdir

import (
	"reflect"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// addObject files obj under its kind; kinds the index does not read are
// dropped (the decoder knows a few more than the index uses).
func addObject(in *index.Inputs, obj runtime.Object) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		in.Namespaces = append(in.Namespaces, o)
	case *corev1.Pod:
		in.Pods = append(in.Pods, o)
	case *corev1.Service:
		in.Services = append(in.Services, o)
	case *discoveryv1.EndpointSlice:
		in.EndpointSlices = append(in.EndpointSlices, o)
	case *securityv1.AuthorizationPolicy:
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, o)
	case *securityv1.PeerAuthentication:
		in.PeerAuthentications = append(in.PeerAuthentications, o)
	case *gatewayv1.Gateway:
		in.Gateways = append(in.Gateways, o)
	case *networkingv1.ServiceEntry:
		in.ServiceEntries = append(in.ServiceEntries, o)
	case *networkingv1.WorkloadEntry:
		in.WorkloadEntries = append(in.WorkloadEntries, o)
	}
}

// kindOf names obj's Go type, which matches its Kubernetes kind for every
// type the decoder knows.
func kindOf(obj runtime.Object) string {
	return reflect.TypeOf(obj).Elem().Name()
}
