package index

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ErrInvalid is wrapped by every error Validate returns for an object whose
// content the index refuses.
var ErrInvalid = errors.New("invalid object")

// ErrUnsupportedKind is wrapped by the error Validate returns for an object
// of a type the index does not read.
var ErrUnsupportedKind = errors.New("unsupported kind")

// InvalidError lists every reason an object was refused. It wraps ErrInvalid.
type InvalidError struct {
	Kind      string
	Namespace string
	Name      string
	// Reasons, in the order found; never empty.
	Reasons []string
}

// Error implements error.
func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s %s/%s: %s", e.Kind, e.Namespace, e.Name, strings.Join(e.Reasons, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// Validate checks one object as a source would before accepting it. It
// returns nil for a usable object, an *InvalidError (wrapping ErrInvalid)
// listing every problem found, or an error wrapping ErrUnsupportedKind for a
// type outside Inputs. Gateways of another class than istio-waypoint are not
// the index's concern and always pass. Build applies the same checks and
// skips objects that fail them.
func Validate(obj runtime.Object) error {
	var (
		kind    string
		meta    objMeta
		reasons []string
	)
	if v := reflect.ValueOf(obj); v.Kind() == reflect.Pointer && v.IsNil() {
		return &InvalidError{Kind: fmt.Sprintf("%T", obj), Reasons: []string{"nil object"}}
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		kind, meta, reasons = kindNamespace, metaOf(o), validateNamespace(o)
	case *corev1.Pod:
		kind, meta, reasons = kindPod, metaOf(o), validatePod(o)
	case *corev1.Service:
		kind, meta, reasons = kindService, metaOf(o), validateService(o)
	case *discoveryv1.EndpointSlice:
		kind, meta, reasons = kindEndpointSlice, metaOf(o), validateEndpointSlice(o)
	case *securityv1.AuthorizationPolicy:
		kind, meta, reasons = kindAuthorizationPolicy, metaOf(o), validateAuthorizationPolicy(o)
	case *securityv1.PeerAuthentication:
		kind, meta, reasons = kindPeerAuthentication, metaOf(o), validatePeerAuthentication(o)
	case *gatewayv1.Gateway:
		kind, meta, reasons = kindGateway, metaOf(o), validateGateway(o)
	case *networkingv1.ServiceEntry:
		kind, meta, reasons = kindServiceEntry, metaOf(o), validateServiceEntry(o)
	case *networkingv1.WorkloadEntry:
		kind, meta, reasons = kindWorkloadEntry, metaOf(o), validateWorkloadEntry(o)
	default:
		return fmt.Errorf("validate %T: %w", obj, ErrUnsupportedKind)
	}
	if len(reasons) == 0 {
		return nil
	}
	return &InvalidError{Kind: kind, Namespace: meta.ns, Name: meta.name, Reasons: reasons}
}

// objMeta is the identity of an object, for messages.
type objMeta struct{ ns, name string }

type namedObject interface {
	GetNamespace() string
	GetName() string
}

func metaOf(o namedObject) objMeta {
	if o == nil {
		return objMeta{}
	}
	return objMeta{ns: o.GetNamespace(), name: o.GetName()}
}

// reasonList collects validation reasons.
type reasonList []string

func (r *reasonList) addf(format string, args ...any) {
	*r = append(*r, fmt.Sprintf(format, args...))
}

func validateName(r *reasonList, name, ns string, namespaced bool) {
	if name == "" {
		r.addf("metadata.name is empty")
	}
	if namespaced && ns == "" {
		r.addf("metadata.namespace is empty")
	}
}

func validateNamespace(o *corev1.Namespace) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, "", false)
	return r
}

func validatePod(o *corev1.Pod) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	if o.Status.PodIP != "" {
		if _, err := netip.ParseAddr(o.Status.PodIP); err != nil {
			r.addf("status.podIP %q is not an IP address", o.Status.PodIP)
		}
	}
	for i, ip := range o.Status.PodIPs {
		if _, err := netip.ParseAddr(ip.IP); err != nil {
			r.addf("status.podIPs[%d] %q is not an IP address", i, ip.IP)
		}
	}
	return r
}

func validateService(o *corev1.Service) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	checkIP := func(field, v string) {
		if v == "" || v == corev1.ClusterIPNone {
			return
		}
		if _, err := netip.ParseAddr(v); err != nil {
			r.addf("%s %q is not an IP address", field, v)
		}
	}
	checkIP("spec.clusterIP", o.Spec.ClusterIP)
	for i, ip := range o.Spec.ClusterIPs {
		checkIP(fmt.Sprintf("spec.clusterIPs[%d]", i), ip)
	}
	for i, ing := range o.Status.LoadBalancer.Ingress {
		checkIP(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP)
	}
	for i, p := range o.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			r.addf("spec.ports[%d].port %d is out of range 1-65535", i, p.Port)
		}
		switch p.TargetPort.Type {
		case intstr.Int:
			if p.TargetPort.IntVal < 0 || p.TargetPort.IntVal > 65535 {
				r.addf("spec.ports[%d].targetPort %d is out of range 1-65535", i, p.TargetPort.IntVal)
			}
		case intstr.String:
			if errs := validation.IsValidPortName(p.TargetPort.StrVal); len(errs) > 0 {
				r.addf("spec.ports[%d].targetPort %q is not a port name: %s", i, p.TargetPort.StrVal, strings.Join(errs, ", "))
			}
		}
	}
	return r
}

func validateEndpointSlice(o *discoveryv1.EndpointSlice) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	if o.AddressType == discoveryv1.AddressTypeFQDN {
		return r
	}
	for i, ep := range o.Endpoints {
		for j, a := range ep.Addresses {
			if _, err := netip.ParseAddr(a); err != nil {
				r.addf("endpoints[%d].addresses[%d] %q is not an IP address", i, j, a)
			}
		}
	}
	for i, p := range o.Ports {
		if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
			r.addf("ports[%d].port %d is out of range 1-65535", i, *p.Port)
		}
	}
	return r
}

// whenKeys lists the condition keys AuthorizationPolicy accepts; the bool
// says whether ztunnel can enforce it (L4).
var whenKeys = map[string]bool{
	"source.ip":               true,
	"source.namespace":        true,
	"source.principal":        true,
	"source.serviceAccount":   true,
	"destination.ip":          true,
	"destination.port":        true,
	"remote.ip":               false,
	"request.auth.principal":  false,
	"request.auth.audiences":  false,
	"request.auth.presenter":  false,
	"request.auth.claims":     false,
	"request.headers":         false,
	"request.experimental.ip": false,
	"connection.sni":          false,
	"experimental.envoy":      false,
}

// whenKeyBase strips a "[...]" suffix (request.headers[x-foo]) and the
// dynamic tail of experimental keys, giving the key's family in whenKeys.
func whenKeyBase(key string) string {
	if i := strings.IndexByte(key, '['); i > 0 && strings.HasSuffix(key, "]") {
		return key[:i]
	}
	if strings.HasPrefix(key, "experimental.envoy.") {
		return "experimental.envoy"
	}
	return key
}

func validateAuthorizationPolicy(o *securityv1.AuthorizationPolicy) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	spec := &o.Spec
	if _, ok := securityapi.AuthorizationPolicy_Action_name[int32(spec.Action)]; !ok {
		r.addf("spec.action %d is not one of ALLOW, DENY, AUDIT, CUSTOM", spec.Action)
	}
	if spec.Selector != nil && (spec.TargetRef != nil || len(spec.TargetRefs) > 0) {
		r.addf("spec.selector and spec.targetRef(s) are mutually exclusive")
	}
	if spec.TargetRef != nil && len(spec.TargetRefs) > 0 {
		r.addf("spec.targetRef and spec.targetRefs are mutually exclusive")
	}
	refs := spec.TargetRefs
	if spec.TargetRef != nil {
		refs = append(refs[:len(refs):len(refs)], spec.TargetRef)
	}
	for i, ref := range refs {
		if ref == nil || ref.Kind == "" || ref.Name == "" {
			r.addf("spec.targetRefs[%d] needs kind and name", i)
		}
	}
	if provider := spec.GetProvider(); spec.Action == securityapi.AuthorizationPolicy_CUSTOM {
		if provider == nil || provider.Name == "" {
			r.addf("spec.provider.name is required for action CUSTOM")
		}
	} else if provider != nil {
		r.addf("spec.provider is only allowed with action CUSTOM")
	}
	for i, rule := range spec.Rules {
		if rule == nil {
			r.addf("spec.rules[%d] is null", i)
			continue
		}
		for j, from := range rule.From {
			at := fmt.Sprintf("spec.rules[%d].from[%d].source", i, j)
			src := from.GetSource()
			if src == nil {
				r.addf("%s is missing", at)
				continue
			}
			if isEmptySource(src) {
				r.addf("%s has no fields set", at)
			}
			validateStringPatterns(&r, at+".principals", src.Principals)
			validateStringPatterns(&r, at+".notPrincipals", src.NotPrincipals)
			validateStringPatterns(&r, at+".requestPrincipals", src.RequestPrincipals)
			validateStringPatterns(&r, at+".notRequestPrincipals", src.NotRequestPrincipals)
			validateStringPatterns(&r, at+".namespaces", src.Namespaces)
			validateStringPatterns(&r, at+".notNamespaces", src.NotNamespaces)
			validateServiceAccounts(&r, at+".serviceAccounts", src.ServiceAccounts)
			validateServiceAccounts(&r, at+".notServiceAccounts", src.NotServiceAccounts)
			validateCIDRs(&r, at+".ipBlocks", src.IpBlocks)
			validateCIDRs(&r, at+".notIpBlocks", src.NotIpBlocks)
			validateCIDRs(&r, at+".remoteIpBlocks", src.RemoteIpBlocks)
			validateCIDRs(&r, at+".notRemoteIpBlocks", src.NotRemoteIpBlocks)
		}
		for j, to := range rule.To {
			at := fmt.Sprintf("spec.rules[%d].to[%d].operation", i, j)
			op := to.GetOperation()
			if op == nil {
				r.addf("%s is missing", at)
				continue
			}
			if len(op.Hosts)+len(op.NotHosts)+len(op.Ports)+len(op.NotPorts)+len(op.Methods)+
				len(op.NotMethods)+len(op.Paths)+len(op.NotPaths) == 0 {
				r.addf("%s has no fields set", at)
			}
			validatePorts(&r, at+".ports", op.Ports)
			validatePorts(&r, at+".notPorts", op.NotPorts)
		}
		for j, cond := range rule.When {
			at := fmt.Sprintf("spec.rules[%d].when[%d]", i, j)
			if cond == nil {
				r.addf("%s is null", at)
				continue
			}
			if _, ok := whenKeys[whenKeyBase(cond.Key)]; !ok {
				r.addf("%s.key %q is not a supported attribute", at, cond.Key)
				continue
			}
			if len(cond.Values) == 0 && len(cond.NotValues) == 0 {
				r.addf("%s needs values or notValues", at)
			}
			switch cond.Key {
			case "source.ip", "destination.ip", "remote.ip":
				validateCIDRs(&r, at+".values", cond.Values)
				validateCIDRs(&r, at+".notValues", cond.NotValues)
			case "destination.port":
				validatePorts(&r, at+".values", cond.Values)
				validatePorts(&r, at+".notValues", cond.NotValues)
			case "source.principal", "source.namespace":
				validateStringPatterns(&r, at+".values", cond.Values)
				validateStringPatterns(&r, at+".notValues", cond.NotValues)
			case "source.serviceAccount":
				validateServiceAccounts(&r, at+".values", cond.Values)
				validateServiceAccounts(&r, at+".notValues", cond.NotValues)
			}
		}
	}
	return r
}

func isEmptySource(s *securityapi.Source) bool {
	return len(s.Principals)+len(s.NotPrincipals)+len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+
		len(s.Namespaces)+len(s.NotNamespaces)+len(s.ServiceAccounts)+len(s.NotServiceAccounts)+
		len(s.IpBlocks)+len(s.NotIpBlocks)+len(s.RemoteIpBlocks)+len(s.NotRemoteIpBlocks)+
		len(s.TrustDomains)+len(s.NotTrustDomains) == 0
}

// validateStringPatterns accepts non-empty values with at most one "*",
// at the start or the end.
func validateStringPatterns(r *reasonList, at string, vals []string) {
	for i, v := range vals {
		switch {
		case v == "":
			r.addf("%s[%d] is empty", at, i)
		case v == "*":
		case strings.Contains(strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*"), "*"),
			strings.HasPrefix(v, "*") && strings.HasSuffix(v, "*"):
			r.addf("%s[%d] %q: only a single leading or trailing '*' is supported", at, i, v)
		}
	}
}

func validateServiceAccounts(r *reasonList, at string, vals []string) {
	for i, v := range vals {
		ns, sa, cut := strings.Cut(v, "/")
		if v == "" || strings.Contains(v, "*") || (cut && (ns == "" || sa == "" || strings.Contains(sa, "/"))) {
			r.addf("%s[%d] %q: want \"<serviceaccount>\" or \"<namespace>/<serviceaccount>\" without wildcards", at, i, v)
		}
	}
}

func validateCIDRs(r *reasonList, at string, vals []string) {
	for i, v := range vals {
		if _, err := parseCIDR(v); err != nil {
			r.addf("%s[%d]: %v", at, i, err)
		}
	}
}

func validatePorts(r *reasonList, at string, vals []string) {
	for i, v := range vals {
		if _, err := parsePort(v); err != nil {
			r.addf("%s[%d]: %v", at, i, err)
		}
	}
}

// parseCIDR reads an IP or a CIDR; a bare IP is a full-length prefix.
func parseCIDR(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR: %w", v, err)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR: %w", v, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parsePort reads a decimal port in 1-65535.
func parsePort(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number in 1-65535", v)
	}
	return uint32(n), nil
}

func validatePeerAuthentication(o *securityv1.PeerAuthentication) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	if m := o.Spec.GetMtls(); m != nil {
		if _, ok := securityapi.PeerAuthentication_MutualTLS_Mode_name[int32(m.Mode)]; !ok {
			r.addf("spec.mtls.mode %d is not one of UNSET, DISABLE, PERMISSIVE, STRICT", m.Mode)
		}
	}
	if len(o.Spec.PortLevelMtls) > 0 && len(o.Spec.GetSelector().GetMatchLabels()) == 0 {
		r.addf("spec.portLevelMtls requires a workload selector")
	}
	for port, m := range o.Spec.PortLevelMtls {
		if port == 0 || port > 65535 {
			r.addf("spec.portLevelMtls: port %d is out of range 1-65535", port)
		}
		if m == nil {
			r.addf("spec.portLevelMtls[%d] is null", port)
			continue
		}
		if _, ok := securityapi.PeerAuthentication_MutualTLS_Mode_name[int32(m.Mode)]; !ok {
			r.addf("spec.portLevelMtls[%d].mode %d is not one of UNSET, DISABLE, PERMISSIVE, STRICT", port, m.Mode)
		}
	}
	// Map iteration order is random; keep messages stable.
	sortStrings(r)
	return r
}

func validateGateway(o *gatewayv1.Gateway) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	if string(o.Spec.GatewayClassName) != WaypointGatewayClass {
		return nil
	}
	validateName(&r, o.Name, o.Namespace, true)
	if v, ok := o.Labels[LabelWaypointFor]; ok {
		if _, known := parseWaypointFor(v); !known {
			r.addf("label %s=%q is not one of service, workload, all, none", LabelWaypointFor, v)
		}
	}
	if len(o.Spec.Listeners) == 0 {
		r.addf("spec.listeners is empty; a waypoint needs an HBONE listener")
	}
	hbone := 0
	names := map[string]bool{}
	for i, l := range o.Spec.Listeners {
		if l.Name == "" {
			r.addf("spec.listeners[%d].name is empty", i)
		} else if names[string(l.Name)] {
			r.addf("spec.listeners[%d].name %q is repeated", i, l.Name)
		}
		names[string(l.Name)] = true
		if l.Port < 1 || l.Port > 65535 {
			r.addf("spec.listeners[%d].port %d is out of range 1-65535", i, l.Port)
		}
		if l.Protocol == "" {
			r.addf("spec.listeners[%d].protocol is empty", i)
		}
		if l.Protocol == ListenerProtocolHBONE {
			hbone++
		}
	}
	if len(o.Spec.Listeners) > 0 && hbone == 0 {
		r.addf("spec.listeners has no listener with protocol HBONE")
	}
	for i, a := range o.Status.Addresses {
		switch {
		case a.Type == nil || *a.Type == gatewayv1.IPAddressType:
			if _, err := netip.ParseAddr(a.Value); err != nil {
				r.addf("status.addresses[%d] %q is not an IP address", i, a.Value)
			}
		case *a.Type == gatewayv1.HostnameAddressType:
			if a.Value == "" {
				r.addf("status.addresses[%d] hostname is empty", i)
			}
		}
	}
	return r
}

func validateServiceEntry(o *networkingv1.ServiceEntry) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	spec := &o.Spec
	if len(spec.Hosts) == 0 {
		r.addf("spec.hosts is empty")
	}
	for i, h := range spec.Hosts {
		if h == "" || strings.ContainsAny(h, " /") {
			r.addf("spec.hosts[%d] %q is not a hostname", i, h)
		}
	}
	validateCIDRs(&r, "spec.addresses", spec.Addresses)
	names := map[string]bool{}
	for i, p := range spec.Ports {
		if p == nil {
			r.addf("spec.ports[%d] is null", i)
			continue
		}
		if p.Number < 1 || p.Number > 65535 {
			r.addf("spec.ports[%d].number %d is out of range 1-65535", i, p.Number)
		}
		if p.TargetPort > 65535 {
			r.addf("spec.ports[%d].targetPort %d is out of range 1-65535", i, p.TargetPort)
		}
		if p.Name != "" && names[p.Name] {
			r.addf("spec.ports[%d].name %q is repeated", i, p.Name)
		}
		names[p.Name] = true
	}
	if spec.WorkloadSelector != nil && len(spec.Endpoints) > 0 {
		r.addf("spec.workloadSelector and spec.endpoints are mutually exclusive")
	}
	for i, ep := range spec.Endpoints {
		if ep == nil {
			r.addf("spec.endpoints[%d] is null", i)
			continue
		}
		if ep.Address == "" {
			r.addf("spec.endpoints[%d].address is empty", i)
		} else if strings.HasPrefix(ep.Address, "unix://") {
			r.addf("spec.endpoints[%d].address %q: unix sockets are not supported", i, ep.Address)
		}
		validateEndpointPorts(&r, fmt.Sprintf("spec.endpoints[%d].ports", i), ep.Ports)
	}
	return r
}

func validateEndpointPorts(r *reasonList, at string, ports map[string]uint32) {
	var bad []string
	for name, p := range ports {
		if p < 1 || p > 65535 {
			bad = append(bad, fmt.Sprintf("%s[%s] %d is out of range 1-65535", at, name, p))
		}
	}
	sortStrings(bad)
	*r = append(*r, bad...)
}

func validateWorkloadEntry(o *networkingv1.WorkloadEntry) []string {
	var r reasonList
	if o == nil {
		return []string{"nil object"}
	}
	validateName(&r, o.Name, o.Namespace, true)
	if o.Spec.Address == "" {
		r.addf("spec.address is empty")
	} else if strings.HasPrefix(o.Spec.Address, "unix://") {
		r.addf("spec.address %q: unix sockets are not supported", o.Spec.Address)
	} else if strings.ContainsAny(o.Spec.Address, " /") {
		r.addf("spec.address %q is not an IP address or hostname", o.Spec.Address)
	}
	validateEndpointPorts(&r, "spec.ports", o.Spec.Ports)
	return r
}
