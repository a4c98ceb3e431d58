package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// maxQueuedControlFrames bounds the control frames (PING/SETTINGS acks,
// WINDOW_UPDATE, RST_STREAM) waiting for the writer; a peer that makes us
// queue more than this without reading is dropped.
const maxQueuedControlFrames = 10000

// initialWindow is the RFC 9113 initial flow-control window.
const initialWindow = 65535

type ctrlKind uint8

const (
	ctrlSettingsAck ctrlKind = iota
	ctrlPingAck
	ctrlPing
	ctrlWindowUpdate
	ctrlRST
	ctrlGoAway
	ctrlClose // close the connection after everything before it is flushed
)

// ctrlFrame is a control frame queued for the connection's writer goroutine.
type ctrlFrame struct {
	kind     ctrlKind
	streamID uint32
	code     http2.ErrCode
	incr     uint32
	ping     [8]byte
}

// serverConn is the server side of one HBONE HTTP/2 connection.
//
// Goroutines: serve runs the read loop; it starts writeLoop (control frames)
// and keepaliveLoop and waits for both before returning. Stream data and
// response headers are written directly by stream goroutines through w; the
// read loop never writes, so a peer that stops reading cannot wedge frame
// processing.
type serverConn struct {
	srv *Server
	raw net.Conn // the TCP connection under TLS

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc

	peer                  spiffeid.ID
	localAddr, remoteAddr net.Addr

	w    frameWriter   // its lock also guards fr's write side, henc and hbuf
	fr   *http2.Framer // reads only from the read loop; writes under w's lock
	henc *hpack.Encoder
	hbuf bytes.Buffer

	tableLimit tableLimit // the peer's SETTINGS_HEADER_TABLE_SIZE, for henc's next block

	ctrlWake chan struct{} // cap 1; pokes writeLoop

	mu            sync.Mutex // guards the fields below and serverStream's flow fields
	streams       map[uint32]*ServerStream
	handlers      int    // handler goroutines running (a reset stream's may outlive it)
	maxClientID   uint32 // highest stream ID the client opened
	sendWindow    int64  // connection-level send window
	peerInitWin   int64  // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame  uint32 // peer's SETTINGS_MAX_FRAME_SIZE
	recvAvail     int64  // connection-level receive window remaining
	recvUnacked   int64  // bytes consumed, not yet returned by WINDOW_UPDATE
	windowCh      chan struct{}
	ctrl          []ctrlFrame
	goAwaySent    bool
	closed        bool
	closeErr      error
	pingInFlight  bool
	pingSentAt    time.Time
	pingPayload   [8]byte
	pingCounter   uint64
	handshakeDone bool
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &serverConn{
		srv:          s,
		raw:          nc,
		ctx:          ctx,
		cancel:       cancel,
		localAddr:    nc.LocalAddr(),
		remoteAddr:   nc.RemoteAddr(),
		ctrlWake:     make(chan struct{}, 1),
		streams:      make(map[uint32]*ServerStream),
		sendWindow:   initialWindow,
		peerInitWin:  initialWindow,
		peerMaxFrame: 16384,
		recvAvail:    ConnWindow,
		windowCh:     make(chan struct{}),
	}
}

// serve runs the connection until it ends. It owns sc.raw.
func (sc *serverConn) serve() {
	defer sc.close(nil)
	log := sc.srv.log.With("remote", sc.remoteAddr.String(), "local", sc.localAddr.String())
	if err := sc.handshake(); err != nil {
		if sc.ctx.Err() == nil { // not the server closing it
			sc.srv.handshakeFailed(sc.remoteAddr, err)
		}
		return
	}
	log = log.With("peer", sc.peer.String())

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sc.writeLoop() }()
	go func() { defer wg.Done(); sc.keepaliveLoop() }()
	defer wg.Wait()

	if sc.srv.isDraining() {
		sc.drain()
	}
	err := sc.readLoop()
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		log.Debug("hbone connection protocol error", "code", http2.ErrCode(ce).String())
		sc.writeGoAwayNow(http2.ErrCode(ce))
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		log.Debug("hbone connection ended", "err", err)
	}
	sc.close(err)
}

// handshake runs TLS, checks ALPN and the peer identity, reads the client
// preface and sends our SETTINGS.
func (sc *serverConn) handshake() error {
	deadline := time.Now().Add(sc.srv.cfg.HandshakeTimeout)
	_ = sc.raw.SetDeadline(deadline)
	cork := newCorkConn(sc.raw)
	tc := tls.Server(cork, sc.srv.tlsConf)
	if err := tc.HandshakeContext(sc.ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != alpnH2 {
		return fmt.Errorf("client did not negotiate ALPN %q (got %q)", alpnH2, cs.NegotiatedProtocol)
	}
	id, err := peerID(cs)
	if err != nil {
		return err
	}
	sc.peer = id
	sc.srv.handshakes.Add(1)

	// The framer reads straight from TLS, which buffers one record (and
	// corkConn several during bulk transfers).
	sc.w.init(tc, cork)
	sc.fr = http2.NewFramer(sc.w.bw, tc)
	sc.fr.SetMaxReadFrameSize(MaxFrameSize)
	sc.fr.MaxHeaderListSize = MaxHeaderListSize
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.SetReuseFrames()
	sc.henc = hpack.NewEncoder(&sc.hbuf)

	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(tc, preface[:]); err != nil {
		return fmt.Errorf("read client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return errors.New("bad client preface")
	}
	sc.w.lock()
	err = sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: StreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: MaxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: MaxHeaderListSize},
	)
	if err == nil {
		err = sc.fr.WriteWindowUpdate(0, ConnWindow-initialWindow)
	}
	err = sc.w.flushUnlock(err)
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	_ = sc.raw.SetDeadline(time.Time{})
	sc.mu.Lock()
	sc.handshakeDone = true
	sc.mu.Unlock()
	return nil
}

// readLoop processes frames until the connection fails.
func (sc *serverConn) readLoop() error {
	for {
		f, err := sc.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				sc.resetStream(se.StreamID, se.Code, true)
				continue
			}
			return err
		}
		if err := sc.processFrame(f); err != nil {
			return err
		}
	}
}

func (sc *serverConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return sc.processSettings(f)
	case *http2.MetaHeadersFrame:
		return sc.processHeaders(f)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		sc.mu.Lock()
		if f.StreamID > sc.maxClientID {
			sc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		sc.mu.Unlock()
		sc.resetStream(f.StreamID, f.ErrCode, false)
		return nil
	case *http2.PingFrame:
		if f.IsAck() {
			sc.mu.Lock()
			if sc.pingInFlight && f.Data == sc.pingPayload {
				sc.pingInFlight = false
			}
			sc.mu.Unlock()
			return nil
		}
		return sc.queue(ctrlFrame{kind: ctrlPingAck, ping: f.Data})
	case *http2.GoAwayFrame:
		// The client will open no more streams; existing ones carry on.
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		// PRIORITY, PRIORITY_UPDATE and unknown frame types are ignored.
		return nil
	}
}

func (sc *serverConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			sc.mu.Lock()
			delta := int64(s.Val) - sc.peerInitWin
			sc.peerInitWin = int64(s.Val)
			for _, st := range sc.streams {
				st.sendWindow += delta
				if st.sendWindow > math.MaxInt32 {
					sc.mu.Unlock()
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			sc.wakeWritersLocked()
			sc.mu.Unlock()
		case http2.SettingMaxFrameSize:
			sc.mu.Lock()
			sc.peerMaxFrame = s.Val
			sc.mu.Unlock()
		case http2.SettingHeaderTableSize:
			sc.tableLimit.offer(s.Val)
		}
		return nil
	}); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return ce
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return sc.queue(ctrlFrame{kind: ctrlSettingsAck})
}

func (sc *serverConn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	sc.mu.Lock()
	if st := sc.streams[id]; st != nil {
		// Trailers: legal only as the end of the client's half.
		sc.mu.Unlock()
		if !f.StreamEnded() {
			sc.resetStream(id, http2.ErrCodeProtocol, true)
			return nil
		}
		st.peerEnded()
		return nil
	}
	if id <= sc.maxClientID {
		// A stream we already closed or reset; frames in flight are
		// expected, so answer with a stream error rather than failing the
		// whole connection.
		sc.mu.Unlock()
		return sc.queue(ctrlFrame{kind: ctrlRST, streamID: id, code: http2.ErrCodeStreamClosed})
	}
	sc.maxClientID = id
	// Running handlers count too: a stream the peer resets leaves the
	// table at once while its handler winds down, and opening and
	// resetting streams in a loop must not start handlers without bound.
	if sc.goAwaySent || sc.closed || len(sc.streams) >= MaxConcurrentStreams || sc.handlers >= MaxConcurrentStreams {
		sc.mu.Unlock()
		return sc.queue(ctrlFrame{kind: ctrlRST, streamID: id, code: http2.ErrCodeRefusedStream})
	}
	sc.srv.streamsOpened.Add(1)
	st := newServerStream(sc, id)
	if f.StreamEnded() {
		st.recvEnded = true
		st.recvEOF = true
	}
	sc.streams[id] = st
	sc.handlers++
	sc.mu.Unlock()

	req, status := sc.parseRequest(f)
	sc.srv.wg.Add(1)
	go func() {
		defer sc.srv.wg.Done()
		defer sc.handlerDone()
		st.run(req, status)
	}()
	return nil
}

// handlerDone counts a stream's handler goroutine out.
func (sc *serverConn) handlerDone() {
	sc.mu.Lock()
	sc.handlers--
	sc.mu.Unlock()
}

// parseRequest validates a CONNECT request. A non-zero status means the
// request is rejected with it and the handler is not called.
func (sc *serverConn) parseRequest(f *http2.MetaHeadersFrame) (*Request, int) {
	if f.Truncated {
		return nil, http.StatusRequestHeaderFieldsTooLarge
	}
	if f.PseudoValue("method") != http.MethodConnect ||
		f.PseudoValue("scheme") != "" || f.PseudoValue("path") != "" || f.PseudoValue("protocol") != "" {
		return nil, http.StatusBadRequest
	}
	target, err := ParseAuthority(f.PseudoValue("authority"))
	if err != nil {
		return nil, http.StatusBadRequest
	}
	req := &Request{
		Authority:  target,
		PeerID:     sc.peer,
		LocalAddr:  sc.localAddr,
		RemoteAddr: sc.remoteAddr,
	}
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case headerForwarded:
			req.Forwarded = joinHeader(req.Forwarded, hf.Value)
		case headerBaggage:
			req.Baggage = joinHeader(req.Baggage, hf.Value)
		case headerTraceparent:
			req.Traceparent = joinHeader(req.Traceparent, hf.Value)
		}
	}
	return req, 0
}

func joinHeader(prev, v string) string {
	if prev == "" {
		return v
	}
	return prev + ", " + v
}

func (sc *serverConn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	sc.mu.Lock()
	if n > sc.recvAvail {
		sc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	sc.recvAvail -= n
	st := sc.streams[id]
	if st == nil || st.recvEnded {
		// Closed or reset stream: return the connection credit.
		sc.creditConnLocked(n)
		idle := id > sc.maxClientID
		sc.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if st != nil {
			return sc.queue(ctrlFrame{kind: ctrlRST, streamID: id, code: http2.ErrCodeStreamClosed})
		}
		return nil
	}
	if n > st.recvAvail {
		sc.creditConnLocked(n)
		sc.mu.Unlock()
		sc.resetStream(id, http2.ErrCodeFlowControl, true)
		return nil
	}
	st.recvAvail -= n
	if pad := n - int64(len(data)); pad > 0 {
		// Padding is never delivered; hand its credit straight back.
		sc.creditConnLocked(pad)
		st.recvAvail += pad
		if err := sc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, streamID: id, incr: uint32(pad)}); err != nil {
			sc.mu.Unlock()
			return err
		}
	}
	ended := f.StreamEnded()
	if ended {
		st.recvEnded = true
	}
	sc.mu.Unlock()

	st.deliver(data, ended)
	if ended {
		sc.maybeRemove(st)
	}
	return nil
}

func (sc *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	if f.StreamID == 0 {
		sc.sendWindow += int64(f.Increment)
		if sc.sendWindow > math.MaxInt32 {
			sc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		sc.wakeWritersLocked()
		sc.mu.Unlock()
		return nil
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID > sc.maxClientID
		sc.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > math.MaxInt32 {
		sc.mu.Unlock()
		sc.resetStream(f.StreamID, http2.ErrCodeFlowControl, true)
		return nil
	}
	sc.wakeWritersLocked()
	sc.mu.Unlock()
	return nil
}

// creditConnLocked accounts n consumed connection-level bytes and queues a
// WINDOW_UPDATE once a quarter of the window is outstanding. sc.mu is held.
func (sc *serverConn) creditConnLocked(n int64) {
	sc.recvUnacked += n
	if sc.recvUnacked >= ConnWindow/4 {
		incr := sc.recvUnacked
		sc.recvUnacked = 0
		sc.recvAvail += incr
		_ = sc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, incr: uint32(incr)})
	}
}

// creditConn returns n bytes of connection-level credit for data that
// will never be read (dropped with a failed stream).
func (sc *serverConn) creditConn(n int) {
	if n <= 0 {
		return
	}
	sc.mu.Lock()
	sc.creditConnLocked(int64(n))
	sc.mu.Unlock()
}

// consumed is called after a stream's reader took n bytes: it returns flow
// control credit to the peer.
func (sc *serverConn) consumed(st *ServerStream, n int) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.creditConnLocked(int64(n))
	if st.recvEnded {
		return
	}
	st.recvUnacked += int64(n)
	if st.recvUnacked >= StreamWindow/4 {
		incr := st.recvUnacked
		st.recvUnacked = 0
		st.recvAvail += incr
		_ = sc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, streamID: st.id, incr: uint32(incr)})
	}
}

// wakeWritersLocked wakes every goroutine waiting for send window or a state
// change. sc.mu is held.
func (sc *serverConn) wakeWritersLocked() {
	close(sc.windowCh)
	sc.windowCh = make(chan struct{})
}

// awaitSend blocks until st may send at least one byte and reserves up to
// want bytes of window, bounded by the peer's max frame size.
func (sc *serverConn) awaitSend(st *ServerStream, want int) (int, error) {
	sc.mu.Lock()
	for {
		if st.sendErr != nil {
			err := st.sendErr
			sc.mu.Unlock()
			return 0, err
		}
		n := min(int64(want), sc.sendWindow, st.sendWindow, int64(sc.peerMaxFrame))
		if n > 0 {
			sc.sendWindow -= n
			st.sendWindow -= n
			sc.mu.Unlock()
			return int(n), nil
		}
		if st.wdl.passed() {
			sc.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		ch := sc.windowCh
		sc.mu.Unlock()
		<-ch // also closed when a write deadline passes
		sc.mu.Lock()
	}
}

// writeData sends one DATA frame (already flow-controlled), joining the
// batch of a goroutine now writing when it can.
func (sc *serverConn) writeData(id uint32, end bool, p []byte) error {
	if err := sc.w.writeData(id, end, p); err != nil {
		sc.close(err)
		return fmt.Errorf("%w: write: %w", ErrStreamReset, err)
	}
	return nil
}

// writeHeaders writes a response HEADERS frame with the given status.
func (sc *serverConn) writeHeaders(id uint32, status int, end bool) error {
	sc.w.lock()
	sc.hbuf.Reset()
	sc.tableLimit.apply(sc.henc)
	err := sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	if err == nil {
		err = sc.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID:      id,
			BlockFragment: sc.hbuf.Bytes(),
			EndStream:     end,
			EndHeaders:    true,
		})
	}
	err = sc.w.flushUnlock(err)
	if err != nil {
		sc.close(err)
		return fmt.Errorf("%w: write headers: %w", ErrStreamReset, err)
	}
	return nil
}

// queue adds a control frame for the writer goroutine.
func (sc *serverConn) queue(c ctrlFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.queueLocked(c)
}

func (sc *serverConn) queueLocked(c ctrlFrame) error {
	if sc.closed {
		return nil
	}
	if len(sc.ctrl) >= maxQueuedControlFrames {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	sc.ctrl = append(sc.ctrl, c)
	select {
	case sc.ctrlWake <- struct{}{}:
	default:
	}
	return nil
}

// writeLoop writes queued control frames until the connection closes.
func (sc *serverConn) writeLoop() {
	var batch []ctrlFrame
	for {
		select {
		case <-sc.ctx.Done():
			return
		case <-sc.ctrlWake:
		}
		sc.mu.Lock()
		batch, sc.ctrl = sc.ctrl, batch[:0]
		sc.mu.Unlock()
		sc.w.lock()
		closeAfter, err := writeCtrlFrames(sc.fr, batch)
		err = sc.w.flushUnlock(err)
		clear(batch)
		if err != nil {
			sc.close(err)
			return
		}
		if closeAfter {
			sc.close(nil)
			return
		}
	}
}

// keepaliveLoop PINGs the client every KeepaliveInterval and closes the
// connection when a PING stays unanswered for KeepaliveTimeout.
func (sc *serverConn) keepaliveLoop() {
	interval, timeout := sc.srv.cfg.KeepaliveInterval, sc.srv.cfg.KeepaliveTimeout
	t := time.NewTicker(min(interval, timeout))
	defer t.Stop()
	for {
		select {
		case <-sc.ctx.Done():
			return
		case now := <-t.C:
			sc.mu.Lock()
			switch {
			case sc.pingInFlight && now.Sub(sc.pingSentAt) >= timeout:
				sc.mu.Unlock()
				sc.srv.log.Debug("hbone keepalive timeout", "remote", sc.remoteAddr.String(), "peer", sc.peer.String())
				sc.close(errors.New("keepalive timeout"))
				return
			case !sc.pingInFlight && now.Sub(sc.pingSentAt) >= interval:
				sc.pingCounter++
				for i := range sc.pingPayload {
					sc.pingPayload[i] = byte(sc.pingCounter >> (8 * i))
				}
				sc.pingInFlight = true
				sc.pingSentAt = now
				_ = sc.queueLocked(ctrlFrame{kind: ctrlPing, ping: sc.pingPayload})
			}
			sc.mu.Unlock()
		}
	}
}

// drain sends GOAWAY (graceful, last stream = highest seen) and closes the
// connection once its streams are gone. Streams the client opens after
// GOAWAY are refused.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	// Before the handshake finishes, serve checks the server's draining flag
	// and calls drain itself.
	if sc.goAwaySent || sc.closed || !sc.handshakeDone {
		return
	}
	sc.goAwaySent = true
	_ = sc.queueLocked(ctrlFrame{kind: ctrlGoAway, streamID: sc.maxClientID, code: http2.ErrCodeNo})
	if len(sc.streams) == 0 {
		_ = sc.queueLocked(ctrlFrame{kind: ctrlClose})
	}
}

// writeGoAwayNow writes a GOAWAY directly, for protocol errors right before
// the connection closes.
func (sc *serverConn) writeGoAwayNow(code http2.ErrCode) {
	sc.mu.Lock()
	last := sc.maxClientID
	sc.mu.Unlock()
	_ = sc.raw.SetWriteDeadline(time.Now().Add(time.Second))
	sc.w.lock()
	_ = sc.w.flushUnlock(sc.fr.WriteGoAway(last, code, nil))
}

// resetStream resets stream id locally; sendRST says whether to tell the peer.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode, sendRST bool) {
	sc.mu.Lock()
	st := sc.streams[id]
	if st == nil {
		if sendRST {
			_ = sc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: id, code: code})
		}
		sc.mu.Unlock()
		return
	}
	who := "peer"
	if sendRST {
		who = "local"
	}
	err := fmt.Errorf("%w: %s %s", ErrStreamReset, who, strings.ToLower(code.String()))
	sc.resetStreamLocked(st, code, sendRST, err)
	sc.mu.Unlock()
	st.fail(err)
}

// resetStreamLocked fails the send half of st with err, removes it and
// optionally queues RST_STREAM. sc.mu is held; the caller must call
// st.fail(err) after releasing it (st.rmu is never taken under sc.mu).
func (sc *serverConn) resetStreamLocked(st *ServerStream, code http2.ErrCode, sendRST bool, err error) {
	if st.sendErr == nil || errors.Is(st.sendErr, errWriteClosed) {
		st.sendErr = err
	}
	st.sendDone = true
	st.recvEnded = true
	if sendRST {
		_ = sc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: st.id, code: code})
	}
	sc.removeLocked(st)
	sc.wakeWritersLocked()
}

// maybeRemove drops st once both halves have ended.
func (sc *serverConn) maybeRemove(st *ServerStream) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.recvEnded && st.sendDone {
		sc.removeLocked(st)
	}
}

// removeLocked forgets st; when draining and nothing is left, the
// connection is closed after pending frames are flushed. sc.mu is held.
func (sc *serverConn) removeLocked(st *ServerStream) {
	if _, ok := sc.streams[st.id]; !ok {
		return
	}
	delete(sc.streams, st.id)
	st.cancel()
	if sc.goAwaySent && len(sc.streams) == 0 {
		_ = sc.queueLocked(ctrlFrame{kind: ctrlClose})
	}
}

// close tears the connection down once; open streams fail with
// ErrStreamReset.
func (sc *serverConn) close(cause error) {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.closed = true
	sc.closeErr = cause
	streams := make([]*ServerStream, 0, len(sc.streams))
	err := fmt.Errorf("%w: connection closed", ErrStreamReset)
	if cause != nil {
		err = fmt.Errorf("%w: connection closed: %w", ErrStreamReset, cause)
	}
	for _, st := range sc.streams {
		if st.sendErr == nil {
			st.sendErr = err
		}
		st.recvEnded = true
		streams = append(streams, st)
		st.cancel()
	}
	clear(sc.streams)
	sc.wakeWritersLocked()
	sc.mu.Unlock()

	sc.cancel()
	// Close the TCP socket, not the TLS layer: a close_notify could block on
	// a peer that stopped reading, and GOAWAY already ended HTTP/2 cleanly.
	_ = sc.raw.Close()
	for _, st := range streams {
		st.fail(err)
	}
}
