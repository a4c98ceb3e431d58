package http1

import (
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"sync"
)

// maxDiscard is how much of an unread request body the server reads past
// to keep the connection; a longer rest closes it instead.
const maxDiscard = 256 << 10

// body is a request body read from the connection: Content-Length bytes,
// or chunks (then the trailer, into the request's Trailer). It is safe for
// one reader and the server's finish to race: mu guards every field, so a
// read after the handler returned gets http.ErrBodyReadAfterClose.
type body struct {
	mu      sync.Mutex
	c       *serverConn
	req     *http.Request
	chunked io.Reader // nil for a Content-Length body
	remain  int64     // Content-Length bytes not yet read
	eof     bool      // read to its end, trailer included
	closed  bool
	err     error // sticky read error
	// expect100 is set while "100 Continue" is owed before the first read.
	expect100 bool
	// expected says the request asked for "100 Continue"; set before the
	// handler runs, then only read (no lock).
	expected bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *body) readLocked(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.expect100 {
		b.expect100 = false
		if err := b.c.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if b.chunked == nil {
		if int64(len(p)) > b.remain {
			p = p[:b.remain]
		}
		n, err = b.c.br.Read(p)
		b.remain -= int64(n)
		switch {
		case b.remain == 0:
			b.eof, err = true, io.EOF
			b.ended()
		case errors.Is(err, io.EOF):
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = b.chunked.Read(p)
		if errors.Is(err, io.EOF) {
			if terr := b.readTrailer(); terr != nil {
				err = terr
			} else {
				b.eof = true
				b.ended()
			}
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// ended runs when the body has been read to its end: while the handler
// still runs, the client's going away now cancels the request (watchPeer).
// Once the handler returned (finish drains a closed body) there is nothing
// left to cancel. b.mu is held.
func (b *body) ended() {
	if !b.closed {
		b.c.watchPeer()
	}
}

// readTrailer reads the trailer section after the last chunk into the
// request's Trailer.
func (b *body) readTrailer() error {
	return b.c.hr.readTrailer(b.c.maxHeaderBytes, &b.req.Trailer)
}

// Close stops the handler's reads; the server reads past the rest.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish ends the body when the handler returned and reports whether the
// connection can carry another request: the body was read to its end, or
// its rest (at most maxDiscard bytes) could be read past. A body whose
// client waits for "100 Continue" that never went out is not read: the
// client may not send it.
func (b *body) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof {
		return true
	}
	if b.err != nil || b.expect100 {
		return false
	}
	if b.chunked == nil && b.remain > maxDiscard {
		return false
	}
	var buf [4096]byte
	for read := 0; read <= maxDiscard; {
		n, err := b.readLocked(buf[:])
		read += n
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// continueOwed reports whether the client may still wait for "100
// Continue". It does not wait for a read in progress (which may block on
// the client): then the answer is yes.
func (b *body) continueOwed() bool {
	if !b.expected {
		return false
	}
	if !b.mu.TryLock() {
		return true
	}
	defer b.mu.Unlock()
	return b.expect100
}

// keepable reports whether, the handler being done, the connection can
// be kept: finish could read past the rest of the body. It does not wait
// for a read in progress (which may block on the client): then the answer
// is no.
func (b *body) keepable() bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	return b.eof || b.err == nil && !b.expect100 && (b.chunked != nil || b.remain <= maxDiscard)
}

// newBody returns the body of req per its framing, or nil when it has
// none.
func newBody(c *serverConn, req *http.Request) *body {
	switch {
	case req.ContentLength > 0:
		return &body{c: c, req: req, remain: req.ContentLength}
	case req.ContentLength < 0:
		return &body{c: c, req: req, chunked: httputil.NewChunkedReader(c.br)}
	}
	return nil
}
