package kubesource

import (
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// factories are the shared informer factories of one Source.
type factories struct {
	kube    informers.SharedInformerFactory
	istio   istioinformers.SharedInformerFactory
	gateway gatewayinformers.SharedInformerFactory
}

// kind is one kind of object the source follows.
type kind struct {
	// name is the Kind, as in index.Problem.
	name string
	// gvr is where the API server serves it.
	gvr schema.GroupVersionResource
	// crd marks custom resources: they are skipped when not served.
	crd bool
	// informer registers (on first call) and returns the kind's informer.
	informer func(f *factories) cache.SharedIndexInformer
}

func gvr(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// kinds lists every kind in index.Inputs.
var kinds = []kind{
	{name: "Namespace", gvr: gvr("", "v1", "namespaces"),
		informer: func(f *factories) cache.SharedIndexInformer { return f.kube.Core().V1().Namespaces().Informer() }},
	{name: "Pod", gvr: gvr("", "v1", "pods"),
		informer: func(f *factories) cache.SharedIndexInformer { return f.kube.Core().V1().Pods().Informer() }},
	{name: "Service", gvr: gvr("", "v1", "services"),
		informer: func(f *factories) cache.SharedIndexInformer { return f.kube.Core().V1().Services().Informer() }},
	{name: "EndpointSlice", gvr: gvr("discovery.k8s.io", "v1", "endpointslices"),
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.kube.Discovery().V1().EndpointSlices().Informer()
		}},
	{name: "AuthorizationPolicy", gvr: gvr("security.istio.io", "v1", "authorizationpolicies"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Security().V1().AuthorizationPolicies().Informer()
		}},
	{name: "PeerAuthentication", gvr: gvr("security.istio.io", "v1", "peerauthentications"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Security().V1().PeerAuthentications().Informer()
		}},
	{name: "RequestAuthentication", gvr: gvr("security.istio.io", "v1", "requestauthentications"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Security().V1().RequestAuthentications().Informer()
		}},
	{name: "ServiceEntry", gvr: gvr("networking.istio.io", "v1", "serviceentries"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Networking().V1().ServiceEntries().Informer()
		}},
	{name: "WorkloadEntry", gvr: gvr("networking.istio.io", "v1", "workloadentries"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Networking().V1().WorkloadEntries().Informer()
		}},
	{name: "VirtualService", gvr: gvr("networking.istio.io", "v1", "virtualservices"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Networking().V1().VirtualServices().Informer()
		}},
	{name: "DestinationRule", gvr: gvr("networking.istio.io", "v1", "destinationrules"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Networking().V1().DestinationRules().Informer()
		}},
	{name: "Telemetry", gvr: gvr("telemetry.istio.io", "v1", "telemetries"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.istio.Telemetry().V1().Telemetries().Informer()
		}},
	{name: "Gateway", gvr: gvr("gateway.networking.k8s.io", "v1", "gateways"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.gateway.Gateway().V1().Gateways().Informer()
		}},
	{name: "HTTPRoute", gvr: gvr("gateway.networking.k8s.io", "v1", "httproutes"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.gateway.Gateway().V1().HTTPRoutes().Informer()
		}},
	{name: "GRPCRoute", gvr: gvr("gateway.networking.k8s.io", "v1", "grpcroutes"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.gateway.Gateway().V1().GRPCRoutes().Informer()
		}},
	{name: "TCPRoute", gvr: gvr("gateway.networking.k8s.io", "v1", "tcproutes"), crd: true,
		informer: func(f *factories) cache.SharedIndexInformer {
			return f.gateway.Gateway().V1().TCPRoutes().Informer()
		}},
}
