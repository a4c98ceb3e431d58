package cluster

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// frame builds an Ethernet/IPv4/TCP frame by hand.
func frame(src, dst netip.AddrPort, seq uint32, flags byte, payload []byte) []byte {
	b := make([]byte, 14, 14+40+len(payload))
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+len(payload)))
	ip[8], ip[9] = 64, 6
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = flags
	b = append(append(append(b, ip...), tcp...), payload...)
	// Ethernet padding after the IP packet must not count as payload.
	return append(b, 0, 0, 0, 0)
}

func TestParseFrameAndReassemble(t *testing.T) {
	src := netip.MustParseAddrPort("10.244.1.2:40000")
	dst := netip.MustParseAddrPort("10.244.2.3:15008")
	isn := uint32(0xfffffff0) // the stream wraps around 2^32
	raw := [][]byte{
		frame(src, dst, isn, FlagSYN, nil),
		frame(src, dst, isn+1+5, FlagACK, []byte("world-and-more")), // before its predecessor
		frame(src, dst, isn+1, FlagACK|FlagPSH, []byte("hello")),
		frame(src, dst, isn+1, FlagACK|FlagPSH, []byte("hello")), // retransmission
		frame(src, dst, isn+1+5+6, FlagACK, []byte("and-more!")), // overlaps by 8 bytes
	}
	var segs []Segment
	for _, f := range raw {
		s, ok := parseFrame(f)
		if !ok {
			t.Fatalf("frame not parsed: % x", f)
		}
		segs = append(segs, s)
	}
	if segs[2].Src != src || segs[2].Dst != dst || string(segs[2].Payload) != "hello" || segs[2].Flags != FlagACK|FlagPSH {
		t.Fatalf("segment %+v", segs[2])
	}
	got := Streams(segs)[Flow{src, dst}]
	if want := "helloworld-and-more!"; string(got) != want {
		t.Errorf("stream %q, want %q", got, want)
	}
	if !Contains(segs, []byte("loworld")) || Contains(segs, []byte("hellohello")) {
		t.Error("Contains disagrees with the reassembled stream")
	}
	if fl := Flows(segs); len(fl) != 1 || fl[0] != (Flow{src, dst}) {
		t.Errorf("flows %v", fl)
	}
	udp := frame(src, dst, 0, 0, []byte("x"))
	udp[14+9] = 17
	if _, ok := parseFrame(udp); ok {
		t.Error("UDP parsed as TCP")
	}
	if _, ok := parseFrame(bytes.Repeat([]byte{0}, 10)); ok {
		t.Error("runt frame parsed")
	}
}

func TestOwnerPID(t *testing.T) {
	for name, want := range map[string]int{
		"zmesh-123-0a1b2c3d-node1":           123,
		"zmesh-123-0a1b2c3d-pod-a.b":         123,
		"zmesh-123-0a1b2c3d-987654":          123,
		"zmesh-e2e-123-0a1b2c3d-node1":       0, // another prefix
		"zmesh-123-nothex00-node1":           0,
		"zmesh-x-0a1b2c3d":                   0,
		"other-123-0a1b2c3d-node1":           0,
		"zmesh-123-0a1b":                     0,
		"zmesh-00000000000-0a1b2c3d-fabric0": 0,
	} {
		pid, ok := ownerPID("zmesh", name)
		if ok != (want != 0) || pid != want {
			t.Errorf("ownerPID(%q) = %d, %v; want %d", name, pid, ok, want)
		}
	}
}
