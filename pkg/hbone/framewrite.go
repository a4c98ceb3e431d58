package hbone

import (
	"bufio"

	"golang.org/x/net/http2"
)

// frameWriteBufferSize is the size of a connection's frame write buffer: one
// full TLS record, so a DATA frame's header and the first part of its
// payload form one record and the rest of a large payload bypasses the
// buffer.
const frameWriteBufferSize = 16 << 10

// writeDataFrame writes a DATA frame's header and payload to bw without
// assembling the frame in a separate buffer (as http2.Framer.WriteData
// does). The caller holds the connection's write lock and has reserved
// flow-control window for p; len(p) must not exceed the peer's
// SETTINGS_MAX_FRAME_SIZE.
func writeDataFrame(bw *bufio.Writer, id uint32, end bool, p []byte) error {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	n := len(p)
	hdr := [9]byte{
		byte(n >> 16), byte(n >> 8), byte(n),
		byte(http2.FrameData), byte(flags),
		byte(id >> 24 & 0x7f), byte(id >> 16), byte(id >> 8), byte(id),
	}
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	_, err := bw.Write(p)
	return err
}

// writeCtrlFrames writes a batch of queued control frames with fr. It
// reports whether the batch asked for the connection to be closed.
func writeCtrlFrames(fr *http2.Framer, batch []ctrlFrame) (closeAfter bool, err error) {
	for _, c := range batch {
		switch c.kind {
		case ctrlSettingsAck:
			err = fr.WriteSettingsAck()
		case ctrlPingAck:
			err = fr.WritePing(true, c.ping)
		case ctrlPing:
			err = fr.WritePing(false, c.ping)
		case ctrlWindowUpdate:
			err = fr.WriteWindowUpdate(c.streamID, c.incr)
		case ctrlRST:
			err = fr.WriteRSTStream(c.streamID, c.code)
		case ctrlGoAway:
			err = fr.WriteGoAway(c.streamID, c.code, nil)
		case ctrlClose:
			closeAfter = true
		}
		if err != nil {
			return closeAfter, err
		}
	}
	return closeAfter, nil
}
