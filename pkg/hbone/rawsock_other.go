//go:build !linux

package hbone

import (
	"net"
	"syscall"
)

// rawSocket is Linux-only; elsewhere sockets use net.Conn's own I/O and
// newRawSocket returns nil.
type rawSocket struct{ rc syscall.RawConn }

func newRawSocket(*net.TCPConn) *rawSocket { return nil }

func (*rawSocket) Read([]byte) (int, error)  { panic("hbone: no raw sockets on this platform") }
func (*rawSocket) Write([]byte) (int, error) { panic("hbone: no raw sockets on this platform") }

// rawRead and rawWrite are the plain system calls here: on failure n is 0
// and err the errno.
func rawRead(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), err
}

func rawWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), err
}
