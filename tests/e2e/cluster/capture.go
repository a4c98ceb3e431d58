package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Segment is one TCP segment seen on the node network.
type Segment struct {
	// Time is when the segment was read from the capture socket.
	Time time.Time
	// Src and Dst are the IPv4 endpoints.
	Src, Dst netip.AddrPort
	// Seq and Ack are the TCP sequence and acknowledgement numbers; Flags
	// the TCP flag byte
	// (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
	Seq   uint32
	Ack   uint32
	Flags uint8
	// Payload is the TCP payload (possibly several wire segments merged by
	// offload into one large frame).
	Payload []byte
}

// Flow is one direction of a TCP connection.
type Flow struct {
	Src, Dst netip.AddrPort
}

// String formats the flow as "src -> dst".
func (f Flow) String() string { return f.Src.String() + " -> " + f.Dst.String() }

// Flow returns the segment's direction.
func (s Segment) Flow() Flow { return Flow{Src: s.Src, Dst: s.Dst} }

// TCP flag bits of Segment.Flags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// captureBufSize bounds one captured frame: veth GSO frames reach 64 KiB.
const captureBufSize = 256 << 10

// Capture records TCP/IPv4 segments crossing the fabric bridge, each once
// (as it enters the bridge from its sending node). Create with
// Cluster.CaptureLink; stop with Stop or by cancelling its context.
type Capture struct {
	file *os.File
	raw  syscall.RawConn
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	segs      []Segment
	truncated int
	err       error
	stopOnce  sync.Once
	bridgeIdx int
	onStop    func() // unregisters from the cluster
}

// CaptureLink starts capturing every TCP segment exchanged between nodes
// (and the control plane) over the fabric bridge, with a pure-Go AF_PACKET
// socket in the fabric namespace. Traffic sent after CaptureLink returns
// is captured. Capture ends on Stop, on ctx cancellation or on Close.
func (c *Cluster) CaptureLink(ctx context.Context) (*Capture, error) {
	c.mu.Lock()
	if err := c.requireStartedLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	bridgeIdx, err := linkIndex(c.fabric, bridgeName)
	if err != nil {
		return nil, fmt.Errorf("cluster: capture: %w", err)
	}
	var fd int
	err = c.fabric.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: capture: packet socket: %w", err)
	}
	// A large buffer so bursts are not dropped while the reader is behind.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	f := os.NewFile(uintptr(fd), "capture-"+c.fabric.Name)
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cluster: capture: %w", err)
	}
	cp := &Capture{
		file:      f,
		raw:       raw,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		bridgeIdx: bridgeIdx,
	}
	cp.onStop = func() {
		c.mu.Lock()
		delete(c.captures, cp)
		c.mu.Unlock()
	}
	c.mu.Lock()
	if err := c.requireStartedLocked(); err != nil {
		c.mu.Unlock()
		f.Close()
		return nil, err
	}
	c.captures[cp] = true
	c.mu.Unlock()
	go cp.read()
	go func() {
		select {
		case <-ctx.Done():
		case <-cp.stop:
		}
		// Wake the reader; it drains what is queued, then exits.
		_ = f.SetReadDeadline(time.Now())
	}()
	return cp, nil
}

// read runs until the read deadline is set by Stop or ctx, then drains the
// socket without blocking and closes it.
func (cp *Capture) read() {
	defer close(cp.done)
	defer cp.file.Close()
	buf := make([]byte, captureBufSize)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := cp.raw.Read(func(fd uintptr) bool {
			n, from, rerr = recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				cp.setErr(err)
			}
			break
		}
		if rerr != nil {
			cp.setErr(rerr)
			break
		}
		cp.handle(buf, n, from)
	}
	// Drain frames already queued when the capture was stopped.
	_ = cp.raw.Control(func(fd uintptr) {
		for {
			n, from, err := recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			cp.handle(buf, n, from)
		}
	})
}

// recvfrom reads one frame; n is the frame's full length, which exceeds
// len(buf) when the frame was truncated.
func recvfrom(fd int, buf []byte, flags int) (int, unix.Sockaddr, error) {
	n, from, err := unix.Recvfrom(fd, buf, flags|unix.MSG_TRUNC)
	return n, from, err
}

func (cp *Capture) setErr(err error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.err == nil {
		cp.err = fmt.Errorf("capture: %w", err)
	}
}

// handle records the frame in buf (n bytes long on the wire, of which at
// most len(buf) were read) if it is a TCP/IPv4 segment entering the bridge.
func (cp *Capture) handle(buf []byte, n int, from unix.Sockaddr) {
	ll, ok := from.(*unix.SockaddrLinklayer)
	if !ok || ll.Pkttype == unix.PACKET_OUTGOING || ll.Ifindex == cp.bridgeIdx {
		// Each frame is seen entering the bridge on its ingress port, again
		// leaving through the egress port (OUTGOING) and, when flooded, on
		// the bridge itself; keep only the first.
		return
	}
	if n > len(buf) {
		cp.mu.Lock()
		cp.truncated++
		cp.mu.Unlock()
		n = len(buf)
	}
	seg, ok := parseFrame(buf[:n])
	if !ok {
		return
	}
	seg.Time = time.Now()
	cp.mu.Lock()
	cp.segs = append(cp.segs, seg)
	cp.mu.Unlock()
}

// parseFrame decodes an Ethernet II frame carrying TCP over IPv4.
func parseFrame(frame []byte) (Segment, bool) {
	if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return Segment{}, false
	}
	ip := frame[14:]
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return Segment{}, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl || ip[9] != unix.IPPROTO_TCP {
		return Segment{}, false
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return Segment{}, false // a non-first fragment has no TCP header
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total == 0 || total > len(ip) {
		total = len(ip) // GSO frames may carry 0; truncation shortens
	}
	tcp := ip[ihl:total]
	if len(tcp) < 20 {
		return Segment{}, false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return Segment{}, false
	}
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	return Segment{
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		Seq:     binary.BigEndian.Uint32(tcp[4:8]),
		Ack:     binary.BigEndian.Uint32(tcp[8:12]),
		Flags:   tcp[13],
		Payload: bytes.Clone(tcp[doff:]),
	}, true
}

// Segments returns a copy of the segments captured so far, in capture
// order.
func (cp *Capture) Segments() []Segment {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]Segment(nil), cp.segs...)
}

// Stop ends the capture, waits for the reader (which first drains frames
// already queued) and returns every segment captured. The error reports a
// socket failure or truncated frames; segments are returned regardless.
// Safe to call more than once.
func (cp *Capture) Stop() ([]Segment, error) {
	cp.stopOnce.Do(func() { close(cp.stop) })
	<-cp.done
	cp.onStop()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	err := cp.err
	if cp.truncated > 0 {
		err = errors.Join(err, fmt.Errorf("capture: %d frames truncated to %d bytes", cp.truncated, captureBufSize))
	}
	return append([]Segment(nil), cp.segs...), err
}

// Streams reassembles the payload of each flow in sequence order,
// dropping retransmitted bytes. Gaps (bytes never captured) are skipped,
// so the result is what crossed the link, not necessarily all of it.
func Streams(segs []Segment) map[Flow][]byte {
	byFlow := make(map[Flow][]Segment)
	for _, s := range segs {
		f := s.Flow()
		byFlow[f] = append(byFlow[f], s)
	}
	out := make(map[Flow][]byte, len(byFlow))
	for f, ss := range byFlow {
		out[f] = reassemble(ss)
	}
	return out
}

func reassemble(ss []Segment) []byte {
	// Sequence numbers relative to the first data byte: the SYN's seq+1 when
	// the SYN was seen, else the lowest seq (modulo wrap-around).
	base := ss[0].Seq
	for _, s := range ss {
		if int32(s.Seq-base) < 0 {
			base = s.Seq
		}
	}
	for _, s := range ss {
		if s.Flags&FlagSYN != 0 {
			base = s.Seq + 1
			break
		}
	}
	sort.SliceStable(ss, func(i, j int) bool { return int32(ss[i].Seq-base) < int32(ss[j].Seq-base) })
	var out []byte
	next := int64(0)
	for _, s := range ss {
		if len(s.Payload) == 0 {
			continue
		}
		off := int64(int32(s.Seq - base))
		end := off + int64(len(s.Payload))
		switch {
		case end <= next:
			continue // retransmission
		case off >= next:
			out = append(out, s.Payload...) // in order, or after a gap
		default:
			out = append(out, s.Payload[next-off:]...)
		}
		next = end
	}
	return out
}

// Contains reports whether needle appears in the reassembled payload of any
// flow, or in any single segment.
func Contains(segs []Segment, needle []byte) bool {
	for _, s := range segs {
		if bytes.Contains(s.Payload, needle) {
			return true
		}
	}
	for _, b := range Streams(segs) {
		if bytes.Contains(b, needle) {
			return true
		}
	}
	return false
}

// Flows returns the flows that carried payload, sorted; to assert "only
// HBONE crossed the link", check that every flow has 15008 at one end.
func Flows(segs []Segment) []Flow {
	seen := make(map[Flow]bool)
	var out []Flow
	for _, s := range segs {
		if f := s.Flow(); len(s.Payload) > 0 && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Src.Compare(out[j].Src); c != 0 {
			return c < 0
		}
		return out[i].Dst.Compare(out[j].Dst) < 0
	})
	return out
}

// linkIndex returns the index of a link inside ns.
func linkIndex(ns Netns, name string) (int, error) {
	h, err := ns.handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s in %s: %w", name, ns, err)
	}
	return l.Attrs().Index, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
