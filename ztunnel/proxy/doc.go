// Package proxy is ztunnel's data path for one enrolled pod: the outbound
// listener (15001) that carries the pod's connections to their destination
// over HBONE (or plain TCP where the destination is outside the mesh), the
// inbound HBONE listener (15008) that terminates tunnels from other
// ztunnels and waypoints, and the inbound plaintext listener (15006).
//
// The package decides nothing about the mesh by itself: a Resolver maps
// destinations to routes, an Authorizer applies L4 policy, Sockets open
// listeners and dials inside the pod's network namespace, and a
// CertificateSource supplies the pod's identity. The ztunnel app adapts its
// state, authorization engine, network namespaces and identity manager to
// these interfaces; tests run the whole data path over loopback.
package proxy
