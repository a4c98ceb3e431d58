package app

import (
	"github.com/zmesh/zmesh/ztunnel/authz"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// authorizer applies the authz engine to inbound connections and hands
// live ones to the tracker for re-checks on policy changes.
type authorizer struct {
	state   *state.State
	engine  *authz.Engine
	tracker *authz.Tracker
	// policiesSynced is closed once the controller's first Authorization
	// response is applied; until then policy is unknown.
	policiesSynced <-chan struct{}
}

var _ proxy.Authorizer = (*authorizer)(nil)

// Authorize evaluates policy for the pod's workload. Until the policies
// have arrived, and for a pod whose workload the controller has not sent
// yet, it refuses (503): policy cannot be known.
func (a *authorizer) Authorize(pod *proxy.PodInfo, c proxy.Conn) proxy.Verdict {
	select {
	case <-a.policiesSynced:
	default:
		return proxy.Verdict{UnknownDestination: true, Reason: "authorization policies not received yet"}
	}
	w := a.state.WorkloadByUID(pod.UID)
	if w == nil {
		return proxy.Verdict{UnknownDestination: true, Reason: "workload unknown to ztunnel"}
	}
	v := a.engine.Evaluate(toAuthz(c), w)
	return proxy.Verdict{Allow: v.Allowed, Policy: v.Policy, Reason: string(v.Reason)}
}

// Track registers the connection for re-checks.
func (a *authorizer) Track(pod *proxy.PodInfo, c proxy.Conn, closeFn func()) func() {
	return a.tracker.Track(toAuthz(c), pod.UID, closeFn).Untrack
}

func toAuthz(c proxy.Conn) authz.Conn {
	ac := authz.Conn{SrcIP: c.Src.Addr(), DstIP: c.Dst.Addr(), DstPort: c.Dst.Port()}
	if !c.SrcIdentity.IsZero() {
		ac.SrcIdentity = c.SrcIdentity.String()
	}
	return ac
}
