package l7

import (
	"cmp"
	"fmt"
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
)

// Access logging (the Telemetry API's accessLogging) in the contract.
const (
	// FileAccessLogName names the access_log entry of an HTTP connection
	// manager or tcp_proxy whose requests or connections are logged.
	FileAccessLogName = "envoy.access_loggers.file"
	// AccessLogPath is where Istio's built-in "envoy" provider writes: the
	// proxy's standard output.
	AccessLogPath = "/dev/stdout"
	// accessLogProvider is Istio's built-in access log provider, the only
	// one a waypoint supports.
	accessLogProvider = "envoy"
)

// Levels of Telemetry configuration for one waypoint service, from the
// mesh-wide default to the most specific.
const (
	levelRoot      = iota // root namespace, no selector or targetRefs
	levelClass            // root namespace, targetRef: the istio-waypoint GatewayClass
	levelNamespace        // the waypoint's namespace, no selector or targetRefs
	levelGateway          // targetRef: the waypoint Gateway
	levelService          // targetRef: the Service or ServiceEntry
	numLevels
)

// attachTelemetry decides, for every service bound to a waypoint, whether
// its waypoint logs its requests, from Telemetry resources' accessLogging
// as Istio resolves it: the most specific level that configures access
// logging wins outright (it replaces, not merges with, its parents'), and
// within one level the oldest resource wins. Telemetries with a workload
// selector configure sidecars and gateways, not waypoints: ignored here.
func (b *builder) attachTelemetry() {
	// chosen[s][level] is the Telemetry configuring s's access logging at
	// that level.
	chosen := map[*service]*[numLevels]*telemetryv1.Telemetry{}
	offer := func(s *service, level int, t *telemetryv1.Telemetry) {
		c := chosen[s]
		if c == nil {
			c = new([numLevels]*telemetryv1.Telemetry)
			chosen[s] = c
		}
		kept := c[level]
		switch {
		case kept == nil:
			c[level] = t
		case kept != t:
			dropped := t
			if olderTelemetry(t, kept) {
				kept, dropped = t, kept
				c[level] = t
			}
			b.problem(kindTelemetry, dropped.Namespace, dropped.Name,
				fmt.Sprintf("configures access logging for the same waypoint services as the older %s/%s; ignored for them", kept.Namespace, kept.Name))
		}
	}
	for _, t := range b.telemetries {
		if len(t.Spec.AccessLogging) == 0 {
			continue
		}
		refs := allTargetRefs(t.Spec.TargetRef, t.Spec.TargetRefs)
		if len(t.Spec.GetSelector().GetMatchLabels()) > 0 {
			if len(refs) > 0 {
				b.problem(kindTelemetry, t.Namespace, t.Name, "selector and targetRefs are exclusive; ignored")
			}
			continue
		}
		if len(refs) == 0 {
			for _, s := range b.svcList {
				switch {
				case s.waypoint == nil:
				case t.Namespace == b.cfg.RootNamespace:
					offer(s, levelRoot, t)
				case t.Namespace == s.waypoint.ns:
					offer(s, levelNamespace, t)
				}
			}
			continue
		}
		for _, ref := range refs {
			if ref == nil {
				continue
			}
			level := telemetryLevel(ref)
			for _, s := range b.policyTarget(kindTelemetry, t.Namespace, t.Name, ref) {
				offer(s, level, t)
			}
		}
	}
	for _, t := range b.telemetries {
		b.checkAccessLogging(t)
	}
	for s, c := range chosen {
		for level := numLevels - 1; level >= 0; level-- {
			if t := c[level]; t != nil {
				s.att.accessLog = accessLogEnabled(t.Spec.AccessLogging)
				break
			}
		}
	}
}

// telemetryLevel is the level of a targetRef policyTarget accepts.
func telemetryLevel(ref *typeapi.PolicyTargetReference) int {
	switch ref.Kind {
	case "GatewayClass":
		return levelClass
	case "Gateway":
		return levelGateway
	default: // Service, ServiceEntry
		return levelService
	}
}

// olderTelemetry orders Telemetries of one level: the oldest first, then
// by namespace and name.
func olderTelemetry(x, y *telemetryv1.Telemetry) bool {
	return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time),
		cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name)) < 0
}

// accessLogEnabled evaluates the accessLogging of the Telemetry that
// applies: the waypoint logs when an entry that applies to it turns the
// envoy provider on (an entry without providers names the default
// provider, envoy) and no later entry turns it off. A waypoint serves the
// requests it logs, so entries matching only CLIENT mode do not apply.
func accessLogEnabled(entries []*telemetryapi.AccessLogging) bool {
	on := false
	for _, e := range entries {
		if e == nil || e.GetMatch().GetMode() == telemetryapi.WorkloadMode_CLIENT {
			continue
		}
		names := []string{accessLogProvider}
		if len(e.Providers) > 0 {
			names = names[:0]
			for _, p := range e.Providers {
				names = append(names, p.GetName())
			}
		}
		if slices.Contains(names, accessLogProvider) {
			on = !e.GetDisabled().GetValue()
		}
	}
	return on
}

// checkAccessLogging reports what of a Telemetry's accessLogging a
// waypoint cannot do.
func (b *builder) checkAccessLogging(t *telemetryv1.Telemetry) {
	for i, e := range t.Spec.AccessLogging {
		if e == nil {
			continue
		}
		for _, p := range e.Providers {
			if p.GetName() != accessLogProvider {
				b.problem(kindTelemetry, t.Namespace, t.Name,
					fmt.Sprintf("accessLogging[%d]: provider %q is not supported by waypoints (only %q); ignored", i, p.GetName(), accessLogProvider))
			}
		}
		if e.GetFilter().GetExpression() != "" {
			b.problem(kindTelemetry, t.Namespace, t.Name,
				fmt.Sprintf("accessLogging[%d]: filter expressions are not supported by waypoints; every request is logged", i))
		}
	}
}

// accessLogs is the access_log of s's listeners: a file access log to
// AccessLogPath when a Telemetry turned it on, else none.
func accessLogs(s *service) ([]*accesslogv3.AccessLog, error) {
	if !s.att.accessLog {
		return nil, nil
	}
	a, err := typed(&filev3.FileAccessLog{Path: AccessLogPath})
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{Name: FileAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}}, nil
}
