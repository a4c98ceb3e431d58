package zds

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// DefaultSocketPath is where the node agent listens and ztunnel connects.
const DefaultSocketPath = "/var/run/ztunnel/ztunnel.sock"

const (
	// maxMessage bounds one datagram; ZDS messages are a few hundred bytes.
	// A longer datagram is truncated by the kernel and rejected.
	maxMessage = 64 << 10
	// maxFDs is how many descriptors a datagram may carry before the kernel
	// truncates the control message (and closes the excess).
	maxFDs = 8
)

var (
	// errTruncated reports a datagram or control message that did not fit.
	errTruncated = errors.New("zds: datagram or control message truncated")
)

// datagram is one received message with any descriptors that came with it.
// Whoever holds a datagram closes its files (closeFiles).
type datagram struct {
	payload []byte
	files   []*os.File
}

func (d *datagram) closeFiles() {
	for _, f := range d.files {
		f.Close()
	}
	d.files = nil
}

// readDatagram reads one message from c. Every descriptor received is
// wrapped in an *os.File owned by the returned datagram, even when an error
// is returned alongside it; a nil datagram carries none.
func readDatagram(c *net.UnixConn) (*datagram, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 on some errors
	d := &datagram{payload: buf[:n]}
	if oobn > 0 {
		fds, perr := parseRights(oob[:oobn])
		for _, fd := range fds {
			d.files = append(d.files, os.NewFile(uintptr(fd), "zds-fd"))
		}
		if perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return d, err
	}
	if n == 0 && oobn == 0 {
		// A zero-length read on SOCK_SEQPACKET is the peer's orderly close
		// (a zero-length datagram cannot be told apart; ZDS never sends one:
		// every valid message encodes to at least two bytes).
		return d, net.ErrClosed
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return d, errTruncated
	}
	return d, nil
}

// parseRights extracts every SCM_RIGHTS descriptor from a control message.
// The descriptors are returned even with an error so the caller closes them.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("zds: control message: %w", err)
	}
	var fds []int
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("zds: SCM_RIGHTS: %w", err))
			continue
		}
		fds = append(fds, got...)
	}
	return fds, errors.Join(errs...)
}

// writeMessage sends m as one datagram, with f's descriptor as SCM_RIGHTS
// when f is not nil. f is not closed.
func writeMessage(c *net.UnixConn, m proto.Message, f *os.File) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("zds: marshal: %w", err)
	}
	if f == nil {
		_, _, err = c.WriteMsgUnix(b, nil, nil)
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	// Control keeps f's descriptor open for the duration of the send.
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = c.WriteMsgUnix(b, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}
