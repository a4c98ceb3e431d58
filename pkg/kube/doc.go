// Package kube builds the Kubernetes clients zmesh's controller, node agent
// and CLI share: the core clientset, Istio's clientset (security and
// networking CRDs), Gateway API's clientset and the apiextensions clientset,
// all from one rest.Config.
//
// Only the controller, the node agent and zmeshctl import this package; the
// proxies (ztunnel, waypoint) never talk to the API server.
package kube
