// Package configdir is the controller's local source: it reads
// Kubernetes-style YAML manifests from a directory and delivers them as
// index.Inputs, reloading when files change.
//
// Every file is parsed on its own. A file that fails to parse or validate is
// reported (file and reason) and its last good contents stay in effect, so a
// bad edit never takes anything away from the served state.
package configdir
