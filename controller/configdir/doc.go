// Package configdir is the controller's local source: it reads
// Kubernetes-style YAML manifests from a directory and delivers them as
// index.Inputs, reloading when files change.
//
// Every file is parsed on its own. A file that fails to parse or validate is
// reported (file and reason) and its last good contents stay in effect, so a
// bad edit never takes anything away from the served state. An invalid
// AuthorizationPolicy or PeerAuthentication that the last good contents
// lack is delivered anyway, for the index to enforce fail-closed (as it
// does for such an object stored in Kubernetes): left out, a new ALLOW
// policy with a mistake would admit everyone.
package configdir
