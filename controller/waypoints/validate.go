package waypoints

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// verdict says whether a waypoint Gateway can be deployed, and if not, the
// Gateway API reason and a message for its Accepted condition.
type verdict struct {
	ok      bool
	reason  gatewayv1.GatewayConditionReason
	message string
}

// checkGateway validates a Gateway of class istio-waypoint. A waypoint has
// exactly one listener, {protocol HBONE, port 15008} (Istio names it
// "mesh"); its name must make a valid Service name; requested addresses
// and parameters are not supported.
func checkGateway(gw *gatewayv1.Gateway) verdict {
	if errs := validation.IsDNS1035Label(gw.Name); len(errs) > 0 {
		return verdict{reason: gatewayv1.GatewayReasonInvalid,
			message: fmt.Sprintf("the name %q cannot name the waypoint's Service: %s", gw.Name, strings.Join(errs, "; "))}
	}
	if v, ok := gw.Labels[LabelWaypointFor]; ok {
		switch v {
		case "service", "workload", "all", "none":
		default:
			return verdict{reason: gatewayv1.GatewayReasonInvalid,
				message: fmt.Sprintf("label %s=%q is not one of service, workload, all, none", LabelWaypointFor, v)}
		}
	}
	if len(gw.Spec.Addresses) > 0 {
		return verdict{reason: gatewayv1.GatewayReasonUnsupportedAddress,
			message: "waypoints do not support spec.addresses; the address is the waypoint Service's cluster IP"}
	}
	if gw.Spec.Infrastructure != nil && gw.Spec.Infrastructure.ParametersRef != nil {
		return verdict{reason: gatewayv1.GatewayReasonInvalidParameters,
			message: "waypoints do not support spec.infrastructure.parametersRef"}
	}
	want := fmt.Sprintf("a waypoint needs exactly one listener {name: mesh, port: %d, protocol: %s}", HBONEPort, ListenerProtocolHBONE)
	if len(gw.Spec.Listeners) != 1 {
		return verdict{reason: gatewayv1.GatewayReasonListenersNotValid,
			message: fmt.Sprintf("%d listeners: %s", len(gw.Spec.Listeners), want)}
	}
	l := gw.Spec.Listeners[0]
	if l.Protocol != ListenerProtocolHBONE || l.Port != HBONEPort {
		return verdict{reason: gatewayv1.GatewayReasonListenersNotValid,
			message: fmt.Sprintf("listener %q is %s on port %d: %s", l.Name, l.Protocol, l.Port, want)}
	}
	return verdict{ok: true}
}
