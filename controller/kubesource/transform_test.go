package kubesource

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestTransform(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	now := metav1.Now()
	fullPod := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "ns", Name: "p", UID: "u1", ResourceVersion: "7", DeletionTimestamp: &now,
				Labels:          map[string]string{"app": "a"},
				Annotations:     map[string]string{annotationLastApplied: "{...}", "ambient.istio.io/redirection": "enabled"},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs"}},
				ManagedFields:   managed,
			},
			Spec: corev1.PodSpec{
				NodeName: "n1", ServiceAccountName: "sa", HostNetwork: true,
				Volumes: []corev1.Volume{{Name: "v"}},
				Containers: []corev1.Container{{Name: "app", Image: "img", Env: []corev1.EnvVar{{Name: "X", Value: "y"}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}}},
				InitContainers: []corev1.Container{{Name: "sidecar", Image: "img2", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
					Ports: []corev1.ContainerPort{{ContainerPort: 9090}}}},
			},
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}, HostIP: "172.30.0.2",
				Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, Message: "long text", LastTransitionTime: now}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "img"}},
			},
		}
	}
	wantPod := func() *corev1.Pod {
		p := fullPod()
		p.ManagedFields = nil
		p.Annotations = map[string]string{"ambient.istio.io/redirection": "enabled"}
		p.Spec = corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa", HostNetwork: true,
			Containers:     []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			InitContainers: []corev1.Container{{Name: "sidecar", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways), Ports: []corev1.ContainerPort{{ContainerPort: 9090}}}}}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}, HostIP: "172.30.0.2",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		return p
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: managed,
		Annotations: map[string]string{annotationLastApplied: "{}"}}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1"}}
	wantSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1"}}
	tests := []struct {
		name    string
		in, out any
	}{
		{"pod", fullPod(), wantPod()},
		{"pod twice (idempotent)", wantPod(), wantPod()},
		{"service", svc, wantSvc},
		{"not an object", "tombstone", "tombstone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := transform(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.out) {
				t.Fatalf("transform:\n got %#v\nwant %#v", got, tt.out)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
