package meshenv

import (
	"io"
	"net"
	"sync"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// forwarder relays TCP connections accepted inside a pod's network
// namespace to an address of the root namespace: it lets a process in a
// pod (a waypoint) reach the controller, which listens on the root
// namespace's loopback. close stops accepting, closes every relayed
// connection and waits for the relay goroutines.
type forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// forward listens on 127.0.0.1:0 inside ns and relays to target.
func forward(ns cluster.Netns, target string) (*forwarder, error) {
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// addr is the listening address inside the pod.
func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) accept() {
	defer f.wg.Done()
	for {
		down, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !f.track(down, up) {
			return
		}
		f.wg.Add(2)
		go f.pipe(up, down)
		go f.pipe(down, up)
	}
}

// track registers a pair; false (both closed) once close has begun.
func (f *forwarder) track(a, b net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = a.Close()
		_ = b.Close()
		return false
	}
	f.conns[a], f.conns[b] = struct{}{}, struct{}{}
	return true
}

// pipe copies src to dst, then closes both.
func (f *forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	_, _ = io.Copy(dst, src)
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
	_ = dst.Close()
	_ = src.Close()
}

func (f *forwarder) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
