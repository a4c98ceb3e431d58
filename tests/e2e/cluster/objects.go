package cluster

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// PodImage is the image name written into generated Pod objects; nothing
// pulls it.
const PodImage = "zmesh/echo"

// Object returns the Pod a kubelet would report for p: running and Ready,
// on p.Node, with p's IP, uid, service account, labels and annotations,
// and one container "app" with p.Ports.
func (p *Pod) Object() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        p.Name,
			Namespace:   p.Namespace,
			UID:         types.UID(p.UID),
			Labels:      cloneMap(p.Labels),
			Annotations: cloneMap(p.Annotations),
		},
		Spec: corev1.PodSpec{
			NodeName:           p.Node.Name,
			ServiceAccountName: p.ServiceAccount,
			Containers: []corev1.Container{{
				Name:  "app",
				Image: PodImage,
				Ports: append([]corev1.ContainerPort(nil), p.Ports...),
			}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			HostIP: p.Node.IP.String(),
			HostIPs: []corev1.HostIP{{
				IP: p.Node.IP.String(),
			}},
			PodIP:  p.IP.String(),
			PodIPs: []corev1.PodIP{{IP: p.IP.String()}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			},
		},
	}
}

// Object returns the Node object for n (InternalIP, PodCIDR, Ready).
func (n *Node) Object() *corev1.Node {
	return &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
}

// NamespaceObject returns a Namespace with the given labels (for example
// "istio.io/dataplane-mode": "ambient").
func NamespaceObject(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: cloneMap(labels)},
	}
}

// ServicePort is one port of a generated Service.
type ServicePort struct {
	Name       string
	Port       int32
	TargetPort intstr.IntOrString // zero value means "same as Port"
	// AppProtocol is optional (for example "http").
	AppProtocol string
}

// ServiceSpec describes a ClusterIP Service.
type ServiceSpec struct {
	Name, Namespace string
	// ClusterIP is the VIP; it is never routed by this package, only
	// captured by the mesh inside pods.
	ClusterIP string
	Selector  map[string]string
	Labels    map[string]string
	Ports     []ServicePort
}

// ServiceObject returns the Service described by s (TCP ports).
func ServiceObject(s ServiceSpec) *corev1.Service {
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: cloneMap(s.Labels)},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: s.ClusterIP,
			Selector:  cloneMap(s.Selector),
		},
	}
	if s.ClusterIP != "" {
		svc.Spec.ClusterIPs = []string{s.ClusterIP}
	}
	for _, p := range s.Ports {
		target := p.TargetPort
		if target == (intstr.IntOrString{}) {
			target = intstr.FromInt32(p.Port)
		}
		sp := corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: target, Protocol: corev1.ProtocolTCP}
		if p.AppProtocol != "" {
			ap := p.AppProtocol
			sp.AppProtocol = &ap
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

// PodObjects returns the Pod objects of every pod in the cluster, sorted by
// namespace/name.
func (c *Cluster) PodObjects() []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range c.Pods() {
		out = append(out, p.Object())
	}
	return out
}

// MarshalYAML renders objects as one multi-document YAML stream ("---"
// between documents), each with its apiVersion and kind.
func MarshalYAML(objs ...any) ([]byte, error) {
	var buf bytes.Buffer
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("marshal object %d: %w", i, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// WriteYAML writes objects to path as a multi-document YAML file (see
// MarshalYAML), replacing it atomically so a directory watcher never reads
// half a file.
func WriteYAML(path string, objs ...any) error {
	b, err := MarshalYAML(objs...)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// A dot file: directory readers skip hidden files.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
