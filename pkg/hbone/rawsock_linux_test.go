//go:build linux

package hbone

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRawSocketCopiesBothWays(t *testing.T) {
	c, s := tcpPair(t)
	rc, rs := newRawSocket(c), newRawSocket(s)
	if rc == nil || rs == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	// More than the socket buffers hold, so writes wait for the reader
	// (EAGAIN, then the netpoller) and reads come in pieces.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	done := make(chan error, 1)
	go func() {
		n, err := rc.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(readerFunc(rs.Read))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(want))
	}
	if n, err := rs.Read(make([]byte, 10)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read after the peer's end = %d, %v; want 0, EOF", n, err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestRawSocketErrorsLikeNetConn(t *testing.T) {
	c, s := tcpPair(t)
	rs := newRawSocket(s)

	// A deadline: a timeout, reported as net.Conn reports it.
	if err := s.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := rs.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline = %v, want a timeout", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "read tcp ") || strings.Contains(msg, "raw-read") {
		t.Errorf("error %q, want it worded as net.Conn's", msg)
	}
	_ = s.SetReadDeadline(time.Time{})

	// The peer resets: the errno comes through.
	_ = c.SetLinger(0)
	_ = c.Close()
	time.Sleep(10 * time.Millisecond)
	if _, err := rs.Read(make([]byte, 10)); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("read after a reset = %v, want the reset", err)
	}

	// Closed locally: net.ErrClosed, for reads and writes.
	_ = s.Close()
	if _, err := rs.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed socket = %v, want net.ErrClosed", err)
	}
	if _, err := rs.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed socket = %v, want net.ErrClosed", err)
	}
}

func TestCorkConnUsesRawSocketForTCP(t *testing.T) {
	c, _ := tcpPair(t)
	if newCorkConn(c).raw == nil {
		t.Error("corkConn over TCP does not use raw socket I/O")
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if newCorkConn(p1).raw != nil {
		t.Error("corkConn over a pipe uses raw socket I/O")
	}
}

func TestRawReadWrite(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := uintptr(fds[0]), uintptr(fds[1])
	defer func() { _ = syscall.Close(fds[0]) }()
	buf := make([]byte, 16)
	if n, err := rawRead(a, buf); n != 0 || !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("read with nothing sent = %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := rawWrite(b, []byte("hello")); n != 5 || err != nil {
		t.Errorf("write = %d, %v; want 5, nil", n, err)
	}
	if n, err := rawRead(a, buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Errorf("read = %d, %v, %q; want 5, nil, hello", n, err, buf[:n])
	}
	_ = syscall.Close(fds[1])
	if n, err := rawRead(a, buf); n != 0 || err != nil {
		t.Errorf("read after the peer closed = %d, %v; want 0, nil (end of stream)", n, err)
	}
	if n, err := rawWrite(b, []byte("x")); n != 0 || !errors.Is(err, syscall.EBADF) {
		t.Errorf("write on a closed descriptor = %d, %v; want 0, EBADF", n, err)
	}
}
