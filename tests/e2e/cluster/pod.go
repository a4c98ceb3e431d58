package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// PodSpec describes a pod to create.
type PodSpec struct {
	// Name is required (a DNS-1123 label, at most 63 bytes).
	Name string
	// Namespace defaults to "default".
	Namespace string
	// Node is the node's name; empty picks the node with fewest pods
	// (lowest index on a tie).
	Node string
	// IP must lie in the node's pod CIDR and be free; the zero value takes
	// the next free address from .2 up.
	IP netip.Addr
	// UID defaults to a random UUID.
	UID string
	// ServiceAccount defaults to "default".
	ServiceAccount string
	// Labels and Annotations are copied into the Pod object.
	Labels      map[string]string
	Annotations map[string]string
	// Ports are the container ports listed in the Pod object.
	Ports []corev1.ContainerPort
}

// Pod is a created pod: a namespace wired to its node.
type Pod struct {
	Name           string
	Namespace      string
	UID            string
	ServiceAccount string
	Labels         map[string]string
	Annotations    map[string]string
	Ports          []corev1.ContainerPort
	// Node is the pod's node.
	Node *Node
	// IP is the pod's address (a /32 on the pod's eth0).
	IP netip.Addr
	// Netns is the pod's namespace; Netns.Path is what a CNI runtime
	// passes as CNI_NETNS.
	Netns Netns
	// HostVeth is the node-side interface of the pod's veth pair (inside
	// the node namespace); the pod side is eth0.
	HostVeth string
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// AddPod creates a pod namespace on a node and wires it up. The pod can
// reach every other pod and node as soon as AddPod returns.
func (c *Cluster) AddPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	if err := validateDNSLabel(spec.Name); err != nil {
		return nil, fmt.Errorf("cluster: pod name: %w", err)
	}
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if err := validateDNSLabel(spec.Namespace); err != nil {
		return nil, fmt.Errorf("cluster: pod namespace: %w", err)
	}
	if spec.ServiceAccount == "" {
		spec.ServiceAccount = "default"
	}
	if spec.UID == "" {
		uid, err := newUID()
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		spec.UID = uid
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cluster: add pod: %w", err)
	}

	c.mu.Lock()
	if err := c.requireStartedLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	key := spec.Namespace + "/" + spec.Name
	if _, dup := c.pods[key]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("cluster: pod %s already exists", key)
	}
	node, err := c.pickNodeLocked(spec.Node)
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	ip, err := allocateIPLocked(node, spec.IP)
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("cluster: pod %s: %w", key, err)
	}
	node.vethSeq++
	node.podCount++
	// '.' cannot occur in either part, so the name is unambiguous.
	name := fmt.Sprintf("%s-pod-%s.%s", c.id, spec.Name, spec.Namespace)
	pod := &Pod{
		Name:           spec.Name,
		Namespace:      spec.Namespace,
		UID:            spec.UID,
		ServiceAccount: spec.ServiceAccount,
		Labels:         maps.Clone(spec.Labels),
		Annotations:    maps.Clone(spec.Annotations),
		Ports:          append([]corev1.ContainerPort(nil), spec.Ports...),
		Node:           node,
		IP:             ip,
		Netns:          Netns{Name: name, Path: filepath.Join(netnsDir, name)},
		HostVeth:       fmt.Sprintf("veth%d", node.vethSeq),
	}
	// Reserve the key while the namespace is built outside the lock.
	c.pods[key] = pod
	c.mu.Unlock()

	if err := c.newNetns(pod.Netns); err != nil {
		c.forgetPod(pod)
		return nil, fmt.Errorf("cluster: pod %s: %w", key, err)
	}
	if err := wirePod(node, pod.Netns, pod.HostVeth, ip); err != nil {
		err = errors.Join(err, c.destroyPod(pod))
		return nil, fmt.Errorf("cluster: pod %s: %w", key, err)
	}
	c.log.Debug("cluster: pod added", "pod", key, "node", node.Name, "ip", ip)
	return pod, nil
}

// pickNodeLocked returns the named node, or the least-loaded one.
func (c *Cluster) pickNodeLocked(name string) (*Node, error) {
	if name != "" {
		for _, n := range c.nodes {
			if n.Name == name {
				return n, nil
			}
		}
		return nil, fmt.Errorf("cluster: no node %q", name)
	}
	best := c.nodes[0]
	for _, n := range c.nodes[1:] {
		if n.podCount < best.podCount {
			best = n
		}
	}
	return best, nil
}

// allocateIPLocked reserves want (if valid) or the next free pod address.
func allocateIPLocked(n *Node, want netip.Addr) (netip.Addr, error) {
	if want.IsValid() {
		switch {
		case !n.PodCIDR.Contains(want):
			return netip.Addr{}, fmt.Errorf("ip %s outside node %s's pod CIDR %s", want, n.Name, n.PodCIDR)
		case want == n.Gateway || want == n.PodCIDR.Addr() || want.As4()[3] == 255:
			return netip.Addr{}, fmt.Errorf("ip %s is reserved", want)
		case n.usedIPs[want]:
			return netip.Addr{}, fmt.Errorf("ip %s already in use", want)
		}
		n.usedIPs[want] = true
		return want, nil
	}
	for a := n.Gateway.Next(); n.PodCIDR.Contains(a) && a.As4()[3] != 255; a = a.Next() {
		if !n.usedIPs[a] {
			n.usedIPs[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s: pod CIDR %s exhausted", n.Name, n.PodCIDR)
}

// Pod returns the pod namespace/name, or nil.
func (c *Cluster) Pod(namespace, name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pods[namespace+"/"+name]
}

// Pods returns every pod, sorted by namespace/name.
func (c *Cluster) Pods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Pod, 0, len(c.pods))
	for _, p := range c.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// RemovePod stops the cluster's processes running in the pod, kills any
// other process left in its namespace, deletes the namespace (the veth pair
// and the node's route to the pod go with it) and frees the pod's IP.
func (c *Cluster) RemovePod(ctx context.Context, pod *Pod) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cluster: remove pod: %w", err)
	}
	c.mu.Lock()
	if c.pods[pod.Key()] != pod {
		c.mu.Unlock()
		return fmt.Errorf("cluster: no pod %s", pod.Key())
	}
	var procs []*Process
	for name, p := range c.procs {
		if p.netns.Path == pod.Netns.Path {
			procs = append(procs, p)
			delete(c.procs, name)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if err := p.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.destroyPod(pod); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: remove pod %s: %w", pod.Key(), err)
	}
	c.log.Debug("cluster: pod removed", "pod", pod.Key())
	return nil
}

// destroyPod deletes the pod's namespace and host veth and forgets it.
func (c *Cluster) destroyPod(pod *Pod) error {
	var errs []error
	if err := removeNetnses([]Netns{pod.Netns}, c.opts.StopTimeout); err != nil {
		errs = append(errs, err)
	}
	// The namespace may live on while a socket or thread holds it; the
	// node side of the veth must go now.
	if err := deleteLink(pod.Node.Netns, pod.HostVeth); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	for i, n := range c.netnses {
		if n.Path == pod.Netns.Path {
			c.netnses = append(c.netnses[:i], c.netnses[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	c.forgetPod(pod)
	return errors.Join(errs...)
}

// forgetPod drops the pod's record and frees its IP.
func (c *Cluster) forgetPod(pod *Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pods[pod.Key()] == pod {
		delete(c.pods, pod.Key())
	}
	delete(pod.Node.usedIPs, pod.IP)
	pod.Node.podCount--
}

// validateDNSLabel checks the RFC 1123 label rules Kubernetes applies to
// namespace names (pod names are subdomains, but labels suffice here).
func validateDNSLabel(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q: want 1..63 characters", s)
	}
	if strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-") {
		return fmt.Errorf("%q: must start and end with an alphanumeric character", s)
	}
	for _, r := range s {
		if !isLowerAlnum(r) && r != '-' {
			return fmt.Errorf("%q: only lowercase letters, digits and '-'", s)
		}
	}
	return nil
}
