package waypoints

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func waypointGateway(name string, listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	if listeners == nil {
		listeners = []gatewayv1.Listener{{Name: "mesh", Port: HBONEPort, Protocol: ListenerProtocolHBONE}}
	}
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: 4, UID: "uid-1"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: GatewayClassName, Listeners: listeners},
	}
}

func TestCheckGateway(t *testing.T) {
	withLabel := waypointGateway("wp")
	withLabel.Labels = map[string]string{LabelWaypointFor: "everything"}
	okLabel := waypointGateway("wp")
	okLabel.Labels = map[string]string{LabelWaypointFor: "all"}
	withAddr := waypointGateway("wp")
	withAddr.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.0.0.1"}}
	withParams := waypointGateway("wp")
	withParams.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "x"}}
	cases := []struct {
		name   string
		gw     *gatewayv1.Gateway
		reason gatewayv1.GatewayConditionReason // empty: accepted
	}{
		{"istio's waypoint", waypointGateway("waypoint"), ""},
		{"other listener name", waypointGateway("wp", gatewayv1.Listener{Name: "hb", Port: HBONEPort, Protocol: ListenerProtocolHBONE}), ""},
		{"waypoint-for all", okLabel, ""},
		{"bad waypoint-for", withLabel, gatewayv1.GatewayReasonInvalid},
		{"wrong port", waypointGateway("wp", gatewayv1.Listener{Name: "mesh", Port: 15009, Protocol: ListenerProtocolHBONE}), gatewayv1.GatewayReasonListenersNotValid},
		{"wrong protocol", waypointGateway("wp", gatewayv1.Listener{Name: "mesh", Port: HBONEPort, Protocol: gatewayv1.HTTPProtocolType}), gatewayv1.GatewayReasonListenersNotValid},
		{"two listeners", waypointGateway("wp",
			gatewayv1.Listener{Name: "mesh", Port: HBONEPort, Protocol: ListenerProtocolHBONE},
			gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}), gatewayv1.GatewayReasonListenersNotValid},
		{"name not a DNS-1035 label", waypointGateway("1wp"), gatewayv1.GatewayReasonInvalid},
		{"name too long for a Service", waypointGateway("w234567890123456789012345678901234567890123456789012345678901234"), gatewayv1.GatewayReasonInvalid},
		{"spec.addresses", withAddr, gatewayv1.GatewayReasonUnsupportedAddress},
		{"parametersRef", withParams, gatewayv1.GatewayReasonInvalidParameters},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := checkGateway(tc.gw)
			if tc.reason == "" {
				if !v.ok {
					t.Fatalf("rejected: %s %s", v.reason, v.message)
				}
				return
			}
			if v.ok || v.reason != tc.reason || v.message == "" {
				t.Fatalf("got ok=%v reason=%q message=%q, want reason %q", v.ok, v.reason, v.message, tc.reason)
			}
		})
	}
}
