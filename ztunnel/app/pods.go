package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/zdsapi"
	"github.com/zmesh/zmesh/ztunnel/identity"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// pods keeps a proxy for every pod the node agent handed over.
type pods struct {
	proxy      *proxy.Proxy
	identities *identity.Manager
	state      *state.State
	td         spiffeid.TrustDomain
	clusterID  string
	log        *slog.Logger

	mu    sync.Mutex // guards byUID
	byUID map[string]*podEntry
}

type podEntry struct {
	pp       *proxy.PodProxy
	ns       *os.File
	identity spiffeid.ID
}

func newPods(p *proxy.Proxy, ids *identity.Manager, st *state.State, td spiffeid.TrustDomain, clusterID string, log *slog.Logger) *pods {
	return &pods{proxy: p, identities: ids, state: st, td: td, clusterID: clusterID, log: log, byUID: map[string]*podEntry{}}
}

// add starts serving a pod; ns becomes the pods' (closed on del or error).
// Re-adding a known uid replaces its proxy (the agent resends pods after a
// reconnect).
func (p *pods) add(uid string, info *zdsapi.WorkloadInfo, ns *os.File) error {
	if info == nil || info.GetName() == "" || info.GetNamespace() == "" {
		_ = ns.Close()
		return errors.New("workload info with name and namespace is required")
	}
	sa := info.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	id, err := spiffeid.FromSegments(p.td, "ns", info.GetNamespace(), "sa", sa)
	if err != nil {
		_ = ns.Close()
		return fmt.Errorf("identity for %s/%s: %w", info.GetNamespace(), info.GetName(), err)
	}
	ips, err := podAddrs(ns)
	if err != nil {
		_ = ns.Close()
		return err
	}
	workloadUID := p.clusterID + "//Pod/" + info.GetNamespace() + "/" + info.GetName()
	pi := proxy.PodInfo{UID: workloadUID, Name: info.GetName(), Namespace: info.GetNamespace(), Identity: id, IPs: ips,
		Peer: peerOf(p.state.WorkloadByUID(workloadUID))}
	if pi.Peer.Workload == "" {
		pi.Peer = proxy.Peer{Workload: info.GetName(), Namespace: info.GetNamespace(), Principal: id.String()}
	}
	pi.Baggage = baggage(p.clusterID, info, p.state.WorkloadByUID(workloadUID))
	p.identities.Acquire(id)
	pp, err := p.proxy.StartPod(pi, &podSockets{ns: ns})
	if err != nil {
		p.identities.Release(id)
		_ = ns.Close()
		return err
	}
	p.mu.Lock()
	old := p.byUID[uid]
	p.byUID[uid] = &podEntry{pp: pp, ns: ns, identity: id}
	p.mu.Unlock()
	if old != nil {
		p.stop(old)
	}
	p.log.Info("pod enrolled", "uid", uid, "pod", info.GetNamespace()+"/"+info.GetName(), "identity", id.String(), "ips", ips)
	return nil
}

// del stops serving a pod; unknown uids are not an error.
func (p *pods) del(uid string) error {
	p.mu.Lock()
	e := p.byUID[uid]
	delete(p.byUID, uid)
	p.mu.Unlock()
	if e != nil {
		p.stop(e)
		p.log.Info("pod removed", "uid", uid)
	}
	return nil
}

// keepOnly drops every pod whose uid is not in keep (after a snapshot).
func (p *pods) keepOnly(keep map[string]bool) {
	p.mu.Lock()
	var gone []string
	for uid := range p.byUID {
		if !keep[uid] {
			gone = append(gone, uid)
		}
	}
	p.mu.Unlock()
	for _, uid := range gone {
		_ = p.del(uid)
	}
}

// stopAll stops every pod proxy (ztunnel shutting down).
func (p *pods) stopAll() {
	p.keepOnly(nil)
}

func (p *pods) stop(e *podEntry) {
	e.pp.Stop()
	p.identities.Release(e.identity)
	_ = e.ns.Close()
}

// socketsFor returns the sockets of the pod owning ip, nil if none.
func (p *pods) socketsFor(ip netip.Addr) proxy.Sockets {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.byUID {
		for _, own := range e.pp.Info().IPs {
			if own == ip {
				return &podSockets{ns: e.ns}
			}
		}
	}
	return nil
}

// count returns how many pods are served.
func (p *pods) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byUID)
}
