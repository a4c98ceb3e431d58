// Package zds implements the ZDS protocol between the node agent and
// ztunnel: a SOCK_SEQPACKET unix socket (DefaultSocketPath), one protobuf
// message (package pkg/zdsapi) per datagram, the pod's network namespace
// passed as an SCM_RIGHTS descriptor with each "add".
//
// The Server is the node agent's side. It keeps the snapshot of enrolled
// pods (uid, workload info, a duplicate of the namespace descriptor), accepts
// one ztunnel at a time (a new connection replaces the old one), expects
// ZdsHello{version: V1}, replays every known pod as "add" (one at a time,
// each acknowledged), sends "snapshot_sent", then streams AddPod and DelPod
// calls live, each waiting for ztunnel's Ack.
//
// The Client is ztunnel's side. It connects with capped exponential backoff,
// sends the hello, hands every request to a Handler and answers it with an
// Ack carrying the handler's error, and reconnects whenever the agent goes
// away. After "snapshot_sent" it tells the handler which uids the snapshot
// contained so that ztunnel can drop the others.
//
// "keep" (KeepWorkload) is understood by the Client: the uid counts as part
// of the snapshot and a handler implementing KeepHandler is told. The Server
// never sends it: it always holds every known pod's namespace and replays a
// full "add".
//
// Malformed input never crashes either side: an undecodable datagram, an
// "add" without a descriptor or with one that is not a network namespace,
// or unexpected descriptors, are answered with an Ack whose error says so,
// and every received descriptor is closed on every path.
package zds
