package index

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// appProtocolOf maps a Kubernetes port to the workload API's app protocol:
// appProtocol wins, else the port name's prefix ("http", "http-web",
// "grpc-api"), as Istio's protocol selection does. Non-TCP ports are UNKNOWN.
func appProtocolOf(proto corev1.Protocol, name string, appProtocol *string) workloadapi.AppProtocol {
	if proto != "" && proto != corev1.ProtocolTCP {
		return workloadapi.AppProtocol_UNKNOWN
	}
	if appProtocol != nil && *appProtocol != "" {
		return protocolByName(*appProtocol)
	}
	if strings.HasPrefix(strings.ToLower(name), "grpc-web") {
		return workloadapi.AppProtocol_UNKNOWN // gRPC-Web has no app protocol of its own
	}
	prefix, _, _ := strings.Cut(name, "-")
	return protocolByName(prefix)
}

// protocolByName maps an Istio protocol name (case-insensitive) or a
// Kubernetes well-known appProtocol.
func protocolByName(p string) workloadapi.AppProtocol {
	switch strings.ToLower(p) {
	case "http", "http1", "http11", "kubernetes.io/ws", "kubernetes.io/wss":
		return workloadapi.AppProtocol_HTTP11
	case "http2", "h2c", "kubernetes.io/h2c":
		return workloadapi.AppProtocol_HTTP2
	case "grpc":
		return workloadapi.AppProtocol_GRPC
	case "tcp":
		return workloadapi.AppProtocol_TCP
	case "tls", "https":
		return workloadapi.AppProtocol_TLS
	}
	return workloadapi.AppProtocol_UNKNOWN
}
