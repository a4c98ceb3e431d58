package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// PodProxy serves one pod's three listeners. Stop closes them and every
// connection they carry.
type PodProxy struct {
	p       *Proxy
	info    PodInfo
	sockets Sockets
	log     *slog.Logger

	hbone    *hbone.Server
	outbound net.Listener
	plain    net.Listener
	inbound  net.Listener

	ctx    context.Context // cancelled by Stop; parent of every connection
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards conns and relays
	conns  map[net.Conn]struct{}
	relays map[*hbone.SpliceHandle]struct{} // running relays (startRelay)
}

// StartPod opens the pod's listeners through sockets and starts serving.
// On error nothing is left open.
func (p *Proxy) StartPod(info PodInfo, sockets Sockets) (_ *PodProxy, err error) {
	if info.Identity.IsZero() || len(info.IPs) == 0 {
		return nil, fmt.Errorf("proxy: pod %s/%s needs an identity and an address", info.Namespace, info.Name)
	}
	pp := &PodProxy{
		p: p, info: info, sockets: sockets,
		log:    p.log.With("pod", info.Namespace+"/"+info.Name),
		conns:  map[net.Conn]struct{}{},
		relays: map[*hbone.SpliceHandle]struct{}{},
	}
	pp.ctx, pp.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			pp.Stop()
		}
	}()
	id := info.Identity
	pp.hbone, err = hbone.NewServer(hbone.ServerConfig{
		Certificate:     func() (*tls.Certificate, error) { return p.cfg.Certificates(id) },
		TrustBundle:     p.cfg.TrustBundle,
		TrustDomain:     p.cfg.TrustDomain,
		Handler:         hbone.HandlerFunc(pp.serveHBONE),
		Logger:          pp.log,
		BufferPool:      p.recv,
		HandshakeFailed: p.cfg.Metrics.handshakeFailed,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	for _, l := range []struct {
		port uint16
		dst  *net.Listener
	}{{OutboundPort, &pp.outbound}, {InboundPlaintextPort, &pp.plain}, {InboundHBONEPort, &pp.inbound}} {
		ln, err := sockets.Listen(l.port)
		if err != nil {
			return nil, fmt.Errorf("proxy: pod %s/%s: listen on %d: %w", info.Namespace, info.Name, l.port, err)
		}
		*l.dst = ln
	}
	pp.wg.Add(3)
	go pp.acceptLoop(pp.outbound, pp.handleOutbound)
	go pp.acceptLoop(pp.plain, pp.handlePlaintext)
	go func() {
		defer pp.wg.Done()
		if err := pp.hbone.Serve(pp.inbound); err != nil && !errors.Is(err, hbone.ErrServerClosed) {
			pp.log.Warn("inbound HBONE listener stopped", "err", err)
		}
	}()
	pp.log.Info("pod proxy started", "identity", info.Identity.String(), "ips", info.IPs)
	return pp, nil
}

// Info returns the pod the proxy serves.
func (pp *PodProxy) Info() *PodInfo { return &pp.info }

// Stop closes the listeners and every connection, and waits for all of the
// pod's goroutines.
func (pp *PodProxy) Stop() {
	pp.cancel()
	for _, ln := range []net.Listener{pp.outbound, pp.plain} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if pp.hbone != nil {
		_ = pp.hbone.Close() // closes the inbound listener and its streams
	} else if pp.inbound != nil {
		_ = pp.inbound.Close()
	}
	pp.mu.Lock()
	for c := range pp.conns {
		_ = c.Close()
	}
	for h := range pp.relays {
		_ = h.Close()
	}
	pp.mu.Unlock()
	pp.wg.Wait()
	pp.log.Info("pod proxy stopped")
}

// acceptLoop accepts connections and handles each on its own goroutine,
// which sets the connection up and starts its relay (startRelay), then
// ends: an established connection keeps no goroutine. handle reports
// whether it started a relay; c stays tracked until the relay ends.
func (pp *PodProxy) acceptLoop(ln net.Listener, handle func(net.Conn) (relaying bool)) {
	defer pp.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if pp.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				pp.log.Warn("accept failed", "listener", ln.Addr().String(), "err", err)
			}
			return
		}
		if !pp.track(c) {
			_ = c.Close()
			return
		}
		pp.wg.Add(1)
		go func() {
			defer pp.wg.Done()
			if !handle(c) {
				pp.untrack(c)
			}
		}()
	}
}

// track records a live downstream connection so that Stop can close it; it
// refuses once Stop has begun.
func (pp *PodProxy) track(c net.Conn) bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.ctx.Err() != nil {
		return false
	}
	pp.conns[c] = struct{}{}
	return true
}

func (pp *PodProxy) untrack(c net.Conn) {
	pp.mu.Lock()
	delete(pp.conns, c)
	pp.mu.Unlock()
	_ = c.Close()
}

// ownsIP reports whether ip is one of the pod's addresses.
func (pp *PodProxy) ownsIP(ip netip.Addr) bool {
	for _, own := range pp.info.IPs {
		if own == ip.Unmap() {
			return true
		}
	}
	return false
}
