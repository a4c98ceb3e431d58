package proxy

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/filter/rbac"
	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/telemetry"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// ServeTCP proxies an accepted L4 tunnel to the target's backend and
// closes conn when done. Network RBAC denials and upstream failures close
// the connection.
func (p *Proxy) ServeTCP(ctx context.Context, conn hbone.HalfCloser, d *Downstream) {
	st := &state{start: time.Now(), snap: p.cfg.Store.Snapshot(), down: d, protocol: "tcp"}
	clusterName := route.DefaultCluster
	var rules []*rbac.Engine
	if d.Service != nil {
		if l := st.snap.Listener(d.Service, d.Port.Port); l != nil && l.TCP != nil {
			clusterName = l.TCP.Pick(rand.Float64())
			rules = l.TCP.RBAC
			st.accessLog = l.TCP.AccessLog
		}
	}
	tm := &telemetry.TCP{Source: sourcePeer(d)}
	if svc := d.Service; svc != nil {
		tm.DestinationService, tm.DestinationServiceName, tm.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	var sent, received int64
	defer func() {
		tm.Flags = joinFlags(st.flags)
		p.cfg.Metrics.TCPClosed(tm, sent, received)
		p.accessLogFor(st.accessLog).Log(&telemetry.Entry{Start: st.start, Protocol: "tcp", Authority: d.Authority.String(), Flags: tm.Flags,
			Duration: time.Since(st.start), BytesReceived: received, BytesSent: sent, UpstreamCluster: st.cluster,
			UpstreamHost: st.upAddr, SourceAddress: d.Source.String(), SourcePrincipal: principal(d), DestinationService: tm.DestinationService})
	}()
	p.cfg.Metrics.TCPOpened(tm)
	attrs := &rbac.Attributes{SourceIP: d.Source.Addr(), DirectRemoteIP: d.DirectRemote, DestinationIP: d.Authority.Addr(),
		DestinationPort: uint32(d.Authority.Port()), Principal: principal(d)}
	for _, e := range rules {
		if !e.Allowed(attrs) {
			st.flag("RBAC")
			_ = conn.Close()
			return
		}
	}
	b, ok := p.resolve(st, clusterName)
	if !ok {
		st.flag("NC")
		_ = conn.Close()
		return
	}
	st.cluster = b.name
	release, err := b.cluster.Acquire(false)
	if err != nil {
		st.flag("UO")
		_ = conn.Close()
		return
	}
	defer release()
	var up net.Conn
	var prev *upstream.Host
	for attempt := 0; attempt < 3; attempt++ {
		h, err := b.cluster.Pick(b.targets, 0, false, prev)
		if err != nil {
			st.flag("UH")
			_ = conn.Close()
			return
		}
		prev = h
		st.upAddr = h.Addr
		st.upHost = b.byAddr[st.upAddr]
		tm.Destination = workloadPeer(st.upHost)
		up, err = b.cluster.Dial(ctx, h)
		b.cluster.Report(h, err != nil)
		if err == nil {
			break
		}
		p.log.Debug("tcp upstream connect failed", "cluster", b.name, "endpoint", st.upAddr, "err", err)
	}
	if up == nil {
		st.flag("UF")
		_ = conn.Close()
		return
	}
	hc, ok := up.(hbone.HalfCloser)
	if !ok {
		_ = up.Close()
		_ = conn.Close()
		st.flag("UF")
		return
	}
	res := hbone.Splice(conn, hc, p.cfg.BufferPool)
	received, sent = res.AToB, res.BToA
	if err := res.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
		st.flag("UC")
	}
}

func principal(d *Downstream) string {
	if d.PeerID.IsZero() {
		return ""
	}
	return d.PeerID.String()
}

func joinFlags(fs []string) string {
	out := ""
	for i, f := range fs {
		if i > 0 {
			out += ","
		}
		out += f
	}
	return out
}

// Resolve looks up the target of a CONNECT in snap: a service VIP:port
// first, then a workload address.
func Resolve(snap *config.Snapshot, d *Downstream) bool {
	if svc, sp, ok := snap.ServiceByVIP(d.Authority); ok {
		d.Service, d.Port = svc, sp
		return true
	}
	if w := snap.WorkloadByIP(d.Authority.Addr()); w != nil {
		d.Workload = w
		d.Port = config.ServicePort{Port: uint32(d.Authority.Port()), TargetPort: uint32(d.Authority.Port()), Protocol: workloadProtocol(snap, w, uint32(d.Authority.Port()))}
		return true
	}
	return false
}

// workloadProtocol finds the protocol of a pod port from the services
// that target it; TCP when none says otherwise.
func workloadProtocol(snap *config.Snapshot, w *config.Workload, port uint32) config.Protocol {
	for key, ports := range w.Services {
		svc := snap.Service(key)
		if svc == nil {
			continue
		}
		for sp, tp := range ports {
			if tp == port {
				if p, ok := svc.Port(sp); ok {
					return p.Protocol
				}
			}
		}
	}
	return config.TCP
}
