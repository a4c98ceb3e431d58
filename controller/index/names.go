package index

// Labels, annotations and well-known names the index reads or writes. The
// values match Istio's so that manifests written for Istio work unchanged.
const (
	// LabelDataplaneMode enrols a Namespace or Pod ("ambient") or opts a Pod
	// out ("none").
	LabelDataplaneMode = "istio.io/dataplane-mode"
	// DataplaneModeAmbient is the enrolling value of LabelDataplaneMode.
	DataplaneModeAmbient = "ambient"
	// DataplaneModeNone is the opting-out value of LabelDataplaneMode.
	DataplaneModeNone = "none"

	// AnnotationRedirection is written on a Pod by the node agent once
	// in-pod traffic capture works.
	AnnotationRedirection = "ambient.istio.io/redirection"
	// RedirectionEnabled is the value of AnnotationRedirection meaning captured.
	RedirectionEnabled = "enabled"

	// LabelTunnel marks a workload that speaks HBONE natively ("http").
	LabelTunnel = "networking.istio.io/tunnel"

	// LabelUseWaypoint binds a Pod, Service, ServiceEntry, WorkloadEntry or
	// Namespace to the named waypoint; "none" opts out.
	LabelUseWaypoint = "istio.io/use-waypoint"
	// LabelUseWaypointNamespace names the waypoint's namespace when it
	// differs from the bound object's.
	LabelUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	// LabelWaypointFor on a waypoint Gateway says which traffic it serves:
	// "service" (default), "workload", "all" or "none".
	LabelWaypointFor = "istio.io/waypoint-for"
	// AnnotationForServiceAccount on a waypoint Gateway binds every pod of
	// that service account in the Gateway's namespace (pre-1.22 Istio form).
	AnnotationForServiceAccount = "istio.io/for-service-account"
	// LabelIngressUseWaypoint on a Service or Namespace ("true") asks
	// gateways to send traffic through the service's waypoint.
	LabelIngressUseWaypoint = "istio.io/ingress-use-waypoint"
	// WaypointGatewayClass is the gatewayClassName of waypoints.
	WaypointGatewayClass = "istio-waypoint"
	// LabelGatewayName is set by the waypoint deployer on the waypoint's
	// own pods and Service.
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
	// LabelGatewayManaged marks objects deployed for a Gateway; the value
	// GatewayManagedMesh marks a waypoint.
	LabelGatewayManaged = "gateway.istio.io/managed"
	// GatewayManagedMesh is the LabelGatewayManaged value of waypoints.
	GatewayManagedMesh = "istio.io-mesh-controller"
	// ListenerProtocolHBONE is the listener protocol of a waypoint's mesh listener.
	ListenerProtocolHBONE = "HBONE"
	// DefaultHBONEPort is the waypoint HBONE port when no listener names one.
	DefaultHBONEPort = 15008

	// LabelNetwork names the network of a Pod, WorkloadEntry or Namespace.
	LabelNetwork = "topology.istio.io/network"

	// LabelCanonicalName and the labels below feed canonical_name and
	// canonical_revision, in Istio's order of precedence.
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	labelAppName           = "app.kubernetes.io/name"
	labelApp               = "app"
	labelAppVersion        = "app.kubernetes.io/version"
	labelVersion           = "version"
	defaultRevision        = "latest"

	// LabelServiceName names the Service of an EndpointSlice.
	LabelServiceName = "kubernetes.io/service-name"

	// StaticStrictPolicyName is the DENY policy, in the root namespace, that
	// refuses peers without an identity; it is listed on STRICT workloads.
	StaticStrictPolicyName = "istio_converted_static_strict"
	// ConvertedPeerAuthenticationPrefix prefixes the name of the DENY policy
	// made from a PeerAuthentication with port-level mTLS.
	ConvertedPeerAuthenticationPrefix = "converted_peer_authentication_"
)

// Kinds used in Problems and uids.
const (
	kindNamespace             = "Namespace"
	kindPod                   = "Pod"
	kindService               = "Service"
	kindEndpointSlice         = "EndpointSlice"
	kindAuthorizationPolicy   = "AuthorizationPolicy"
	kindPeerAuthentication    = "PeerAuthentication"
	kindGateway               = "Gateway"
	kindServiceEntry          = "ServiceEntry"
	kindWorkloadEntry         = "WorkloadEntry"
	networkingGroupPrefix     = "networking.istio.io/"
	gatewayGroup              = "gateway.networking.k8s.io"
	serviceAccountDefaultName = "default"
)
