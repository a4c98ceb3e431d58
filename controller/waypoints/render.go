package waypoints

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// objectLabels are the labels of every object deployed for gw.
func objectLabels(gw *gatewayv1.Gateway) map[string]string {
	return map[string]string{
		LabelGatewayName: gw.Name,
		LabelManaged:     ManagedValue,
	}
}

// ownerRef makes gw the controlling owner, so that deleting the Gateway
// garbage-collects what was deployed for it.
func ownerRef(gw *gatewayv1.Gateway) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(gatewayv1.GroupVersion.String()).
		WithKind("Gateway").
		WithName(gw.Name).
		WithUID(gw.UID).
		WithController(true)
}

// renderServiceAccount is the identity of the waypoint's pods.
func renderServiceAccount(gw *gatewayv1.Gateway) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(gw.Name, gw.Namespace).
		WithLabels(objectLabels(gw)).
		WithOwnerReferences(ownerRef(gw))
}

// renderService exposes the waypoint: status-port 15021 first, then the
// HBONE listener, named after the listener with appProtocol the lowercase
// listener protocol, as Istio does.
func renderService(gw *gatewayv1.Gateway) *corev1ac.ServiceApplyConfiguration {
	ports := []*corev1ac.ServicePortApplyConfiguration{
		corev1ac.ServicePort().WithName("status-port").WithPort(StatusPort).
			WithProtocol(corev1.ProtocolTCP).WithAppProtocol("tcp").WithTargetPort(intstr.FromInt32(StatusPort)),
	}
	for _, l := range gw.Spec.Listeners {
		ports = append(ports, corev1ac.ServicePort().WithName(string(l.Name)).WithPort(l.Port).
			WithProtocol(corev1.ProtocolTCP).WithAppProtocol(strings.ToLower(string(l.Protocol))).
			WithTargetPort(intstr.FromInt32(l.Port)))
	}
	return corev1ac.Service(gw.Name, gw.Namespace).
		WithLabels(objectLabels(gw)).
		WithOwnerReferences(ownerRef(gw)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(map[string]string{LabelGatewayName: gw.Name}).
			WithPorts(ports...))
}

// renderDeployment runs the waypoint binary. Its contract: flags
// --controller and --controller-name (then Options.ExtraArgs); env POD_NAME, POD_NAMESPACE,
// INSTANCE_IP, SERVICE_ACCOUNT (downward API), TRUST_DOMAIN, CLUSTER_ID;
// a projected service-account token (audience istio-ca) at
// /var/run/secrets/tokens/istio-token; the mesh root at
// /var/run/secrets/istio/root-cert.pem; readiness on :15021/healthz/ready.
func (d *Deployer) renderDeployment(gw *gatewayv1.Gateway) *appsv1ac.DeploymentApplyConfiguration {
	o := d.opts
	podLabels := objectLabels(gw)
	podLabels[LabelDataplaneMode] = "none"
	podLabels["service.istio.io/canonical-name"] = gw.Name
	podLabels["service.istio.io/canonical-revision"] = "latest"
	fieldEnv := func(name, path string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath(path)))
	}
	container := corev1ac.Container().
		WithName(ContainerName).
		WithImage(o.Image).
		WithArgs(append([]string{
			"--controller=" + o.ControllerAddress,
			"--controller-name=" + o.ControllerSAN,
		}, o.ExtraArgs...)...).
		WithEnv(
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("INSTANCE_IP", "status.podIP"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
			corev1ac.EnvVar().WithName("TRUST_DOMAIN").WithValue(o.TrustDomain),
			corev1ac.EnvVar().WithName("CLUSTER_ID").WithValue(o.ClusterID),
		).
		WithPorts(
			corev1ac.ContainerPort().WithName("hbone").WithContainerPort(HBONEPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("http-envoy-prom").WithContainerPort(MetricsPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("status-port").WithContainerPort(StatusPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/healthz/ready").WithPort(intstr.FromInt32(StatusPort))).
			WithPeriodSeconds(2).WithFailureThreshold(4).WithTimeoutSeconds(3)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("istio-token").WithMountPath(TokenDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("istiod-ca-cert").WithMountPath(RootCertDir).WithReadOnly(true),
		).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithRunAsUser(1337).WithRunAsGroup(1337).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")))
	if o.ImagePullPolicy != "" {
		container.WithImagePullPolicy(o.ImagePullPolicy)
	}
	pod := corev1ac.PodSpec().
		WithServiceAccountName(gw.Name).
		WithTerminationGracePeriodSeconds(30).
		WithContainers(container).
		WithVolumes(
			corev1ac.Volume().WithName("istio-token").WithProjected(corev1ac.ProjectedVolumeSource().
				WithSources(corev1ac.VolumeProjection().WithServiceAccountToken(
					corev1ac.ServiceAccountTokenProjection().WithAudience(TokenAudience).
						WithExpirationSeconds(tokenExpirySec).WithPath(TokenFile)))),
			corev1ac.Volume().WithName("istiod-ca-cert").WithConfigMap(
				corev1ac.ConfigMapVolumeSource().WithName(RootConfigMap)),
		)
	return appsv1ac.Deployment(gw.Name, gw.Namespace).
		WithLabels(objectLabels(gw)).
		WithOwnerReferences(ownerRef(gw)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{LabelGatewayName: gw.Name})).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podLabels).
				WithSpec(pod)))
}

// serviceHost is the waypoint Service's cluster-local name.
func (d *Deployer) serviceHost(gw *gatewayv1.Gateway) string {
	return fmt.Sprintf("%s.%s.svc.%s", gw.Name, gw.Namespace, d.opts.DomainSuffix)
}
