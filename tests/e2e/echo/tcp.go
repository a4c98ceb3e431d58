package echo

import (
	"errors"
	"io"
	"net"
)

// serveTCP accepts on l and echoes every byte back until the peer closes
// its side; then it closes the connection.
func (s *Server) serveTCP(l net.Listener, port int) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("echo: tcp accept", "port", port, "err", err)
			}
			return
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			defer c.Close()
			n, err := echoCopy(c)
			info, ierr := describeConn(c)
			s.log.Debug("echo: tcp connection done", "port", port, "peer", info.peer,
				"identity", info.header.Identity, "bytes", n, "err", errors.Join(err, ierr))
		})
	}
}

// echoCopy writes back everything read from c until EOF.
func echoCopy(c net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
