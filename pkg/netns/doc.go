// Package netns holds small, safe helpers for working with Linux network
// namespaces from a Go process: running a function inside a namespace on a
// locked OS thread, opening and dialing sockets that live in a pod's
// namespace, and the socket options ztunnel relies on (SO_MARK,
// IP_TRANSPARENT, SO_ORIGINAL_DST).
//
// Namespaces are passed as open files (a path under /proc/<pid>/ns/net or a
// bind mount such as /run/netns/<name>). Functions in this package never close
// a namespace file they were given; the caller keeps ownership.
//
// A socket belongs to the namespace it was created in for its whole life, so
// a listener opened with Listen keeps accepting connections in the pod's
// namespace after the helper has switched the thread back.
package netns
