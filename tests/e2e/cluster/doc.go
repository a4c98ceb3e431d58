// Package cluster simulates the data plane of a Kubernetes cluster on one
// machine with network namespaces, for the end-to-end tests and the demo.
//
// The layout:
//
//   - a "fabric" namespace holds a bridge (br0); nothing is created in the
//     root namespace, so the host's networking is never touched;
//   - node i (1-based, named "node<i>") is a namespace with eth0 on the
//     bridge at 172.30.0.(10+i)/24, IP forwarding on, and a route to every
//     other node's pod CIDR 10.244.<j>.0/24 via that node's IP;
//   - a pod is a namespace whose eth0 is one end of a veth pair; the other
//     end lives in its node's namespace and carries the gateway address
//     10.244.<i>.1/32. The pod has its address as a /32, an on-link route to
//     the gateway and a default route via it; the node has a /32 route to
//     the pod over the veth;
//   - optionally a control-plane namespace on the bridge at 172.30.0.2 for
//     processes that every node must reach (the controller, say).
//
// Every namespace name starts with "<prefix>-<pid>-<random>-", so concurrent
// runs never collide and Cleanup can remove what a crashed run left behind.
// Cluster.Close stops every process the cluster started (and any other
// process still inside its namespaces), deletes the namespaces (and with
// them every link and route) and removes the cluster's work directory.
//
// Besides the topology the package runs processes inside namespaces with
// their output in log files (StartProcess, Run), dials and listens from
// inside a namespace in-process (Netns), captures the TCP segments crossing
// the inter-node link with a pure-Go AF_PACKET socket (CaptureLink), and
// turns pods into the corev1 objects the controller reads (objects.go).
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
package cluster
