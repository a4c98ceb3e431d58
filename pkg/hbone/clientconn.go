package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// initialPeerMaxStreams is how many streams a client opens before the
	// server's SETTINGS arrive.
	initialPeerMaxStreams = 100
	// defaultPeerMaxStreams applies when the server's SETTINGS carry no
	// SETTINGS_MAX_CONCURRENT_STREAMS.
	defaultPeerMaxStreams = 1000
)

// errRefused marks a stream the server never processed (REFUSED_STREAM, or
// beyond a GOAWAY's last stream): it may be retried on another connection.
var errRefused = errors.New("stream refused")

// clientConn is the client side of one HBONE HTTP/2 connection, the pool's
// own counterpart of serverConn: request headers and stream data are
// written straight from the calling goroutine (no per-stream goroutine or
// pipe), received data waits in pooled chunks only until it is read.
//
// Goroutines: run (started by start) is the read loop; it starts writeLoop
// (control frames) and keepaliveLoop and waits for both before returning.
// The read loop never takes the write lock.
type clientConn struct {
	raw  net.Conn // the TCP connection under TLS
	log  *slog.Logger
	bufs *BufferPool

	keepaliveInterval, keepaliveTimeout time.Duration

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	frames atomic.Uint64 // frames read, for keepalive
	broken *atomic.Bool  // set by close; owned by the pool's poolConn

	w    frameWriter   // its lock also guards fr's write side, henc, hbuf and stream ID order
	fr   *http2.Framer // reads only from the read loop; writes under w's lock
	henc *hpack.Encoder
	hbuf bytes.Buffer

	tableLimit tableLimit // the peer's SETTINGS_HEADER_TABLE_SIZE, for henc's next block

	ctrlWake chan struct{} // cap 1; pokes writeLoop

	mu             sync.Mutex // guards the fields below and ClientStream's flow fields
	streams        map[uint32]*ClientStream
	nextID         uint32
	reserved       int    // slots handed out by reserve and not yet used
	peerMaxStreams uint32 // server's SETTINGS_MAX_CONCURRENT_STREAMS
	sendWindow     int64
	peerInitWin    int64
	peerMaxFrame   uint32
	recvAvail      int64
	recvUnacked    int64
	windowCh       chan struct{}
	ctrl           []ctrlFrame
	goAway         bool // the server sent GOAWAY: no new streams
	closed         bool
	pingInFlight   bool
	pingSentAt     time.Time
	pingPayload    [8]byte
	pingCounter    uint64
}

// newClientConn sets up HTTP/2 on an established TLS connection tc whose
// socket is cork (under tc) and raw (under cork), and writes the preface
// and SETTINGS. It starts nothing; call run.
func newClientConn(p *Pool, tc *tls.Conn, cork *corkConn, raw net.Conn, broken *atomic.Bool) (*clientConn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cc := &clientConn{
		raw:               raw,
		log:               p.log,
		bufs:              p.bufs,
		keepaliveInterval: p.cfg.KeepaliveInterval,
		keepaliveTimeout:  p.cfg.KeepaliveTimeout,
		ctx:               ctx,
		cancel:            cancel,
		broken:            broken,
		ctrlWake:          make(chan struct{}, 1),
		streams:           make(map[uint32]*ClientStream),
		nextID:            1,
		peerMaxStreams:    initialPeerMaxStreams,
		sendWindow:        initialWindow,
		peerInitWin:       initialWindow,
		peerMaxFrame:      16384,
		recvAvail:         ConnWindow,
		windowCh:          make(chan struct{}),
	}
	cc.w.init(tc, cork)
	cc.fr = http2.NewFramer(cc.w.bw, tc)
	cc.fr.SetMaxReadFrameSize(MaxFrameSize)
	cc.fr.MaxHeaderListSize = MaxHeaderListSize
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)

	cc.w.lock()
	_, err := cc.w.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = cc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: StreamWindow},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: MaxFrameSize},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: MaxHeaderListSize},
		)
	}
	if err == nil {
		err = cc.fr.WriteWindowUpdate(0, ConnWindow-initialWindow)
	}
	if err = cc.w.flushUnlock(err); err != nil {
		cancel()
		return nil, fmt.Errorf("write preface: %w", err)
	}
	return cc, nil
}

// run serves the connection until it fails or is closed, then fails its
// streams and returns after its other goroutines have ended.
func (cc *clientConn) run() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); cc.writeLoop() }()
	go func() { defer wg.Done(); cc.keepaliveLoop() }()
	err := cc.readLoop()
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		cc.log.Debug("hbone connection protocol error", "code", http2.ErrCode(ce).String())
		cc.writeGoAwayNow(http2.ErrCode(ce))
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		cc.log.Debug("hbone connection ended", "err", err)
	}
	cc.close(err)
	wg.Wait()
}

// reserve takes a stream slot unless the connection is closing or at the
// server's concurrency limit. Every reserved slot must be used by
// openStream, which releases it.
func (cc *clientConn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed || cc.goAway || uint64(len(cc.streams)+cc.reserved) >= uint64(cc.peerMaxStreams) ||
		cc.nextID > math.MaxInt32-2 {
		return false
	}
	cc.reserved++
	return true
}

// state reports whether the connection is closed, or closing: GOAWAY
// received, or stream IDs used up.
func (cc *clientConn) state() (closed, closing bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.closed, cc.goAway || cc.nextID > math.MaxInt32-2
}

// openStream sends a CONNECT request on a reserved slot and waits for the
// answer. It returns the stream and the response status; on a non-200
// status the stream is already closed. retry reports a failure that another
// connection may not have (refused, or the connection is gone).
func (cc *clientConn) openStream(ctx context.Context, authority string, hdrs []hpack.HeaderField) (_ *ClientStream, status int, retry bool, _ error) {
	st := newClientStream(cc)
	cc.w.lock()
	cc.mu.Lock()
	cc.reserved--
	if cc.closed || cc.goAway {
		cc.mu.Unlock()
		_ = cc.w.flushUnlock(nil)
		return nil, 0, true, errors.New("connection closing")
	}
	st.id = cc.nextID
	cc.nextID += 2
	st.sendWindow = cc.peerInitWin
	cc.streams[st.id] = st
	cc.mu.Unlock()
	err := cc.writeRequestHeaders(st.id, authority, hdrs)
	if err = cc.w.flushUnlock(err); err != nil {
		cc.close(err)
		return nil, 0, true, fmt.Errorf("write request: %w", err)
	}

	select {
	case <-st.respDone:
	case <-ctx.Done():
		st.abort()
		return nil, 0, false, context.Cause(ctx)
	}
	if st.respErr != nil {
		err := st.respErr
		st.abort()
		return nil, 0, errors.Is(err, errRefused) || errors.Is(err, errConnClosed), err
	}
	if st.status != 200 {
		st.abort()
		return nil, st.status, false, nil
	}
	return st, st.status, false, nil
}

// writeRequestHeaders encodes and writes a CONNECT header block, split
// into CONTINUATION frames if the server's frame size requires. The
// caller holds cc.w's lock.
func (cc *clientConn) writeRequestHeaders(id uint32, authority string, hdrs []hpack.HeaderField) error {
	cc.hbuf.Reset()
	cc.tableLimit.apply(cc.henc)
	fields := append([]hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: authority}}, hdrs...)
	for _, f := range fields {
		if err := cc.henc.WriteField(f); err != nil {
			return err
		}
	}
	cc.mu.Lock()
	maxFrame := int(cc.peerMaxFrame)
	cc.mu.Unlock()
	block := cc.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), maxFrame)]
		block = block[len(chunk):]
		var err error
		if first {
			err = cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndHeaders: len(block) == 0})
		} else {
			err = cc.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

// errConnClosed is the cause streams fail with when their connection ends.
var errConnClosed = errors.New("connection closed")

// readLoop processes frames until the connection fails.
func (cc *clientConn) readLoop() error {
	for {
		f, err := cc.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.resetStream(se.StreamID, se.Code, true)
				continue
			}
			return err
		}
		cc.frames.Add(1)
		if err := cc.processFrame(f); err != nil {
			return err
		}
	}
}

func (cc *clientConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return cc.processSettings(f)
	case *http2.MetaHeadersFrame:
		return cc.processHeaders(f)
	case *http2.DataFrame:
		return cc.processData(f)
	case *http2.WindowUpdateFrame:
		return cc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		if f.StreamID >= cc.nextIDSnapshot() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		cc.resetStream(f.StreamID, f.ErrCode, false)
		return nil
	case *http2.PingFrame:
		if f.IsAck() {
			cc.mu.Lock()
			if cc.pingInFlight && f.Data == cc.pingPayload {
				cc.pingInFlight = false
			}
			cc.mu.Unlock()
			return nil
		}
		return cc.queue(ctrlFrame{kind: ctrlPingAck, ping: f.Data})
	case *http2.GoAwayFrame:
		cc.processGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		// Push is disabled in our SETTINGS.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		return nil
	}
}

func (cc *clientConn) nextIDSnapshot() uint32 {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.nextID
}

func (cc *clientConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	sawMaxStreams := false
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			cc.mu.Lock()
			delta := int64(s.Val) - cc.peerInitWin
			cc.peerInitWin = int64(s.Val)
			for _, st := range cc.streams {
				st.sendWindow += delta
				if st.sendWindow > math.MaxInt32 {
					cc.mu.Unlock()
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			cc.wakeWritersLocked()
			cc.mu.Unlock()
		case http2.SettingMaxFrameSize:
			cc.mu.Lock()
			cc.peerMaxFrame = s.Val
			cc.mu.Unlock()
		case http2.SettingMaxConcurrentStreams:
			sawMaxStreams = true
			cc.mu.Lock()
			cc.peerMaxStreams = s.Val
			cc.mu.Unlock()
		case http2.SettingHeaderTableSize:
			cc.tableLimit.offer(s.Val)
		}
		return nil
	}); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return ce
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if !sawMaxStreams {
		cc.mu.Lock()
		if cc.peerMaxStreams == initialPeerMaxStreams {
			cc.peerMaxStreams = defaultPeerMaxStreams
		}
		cc.mu.Unlock()
	}
	return cc.queue(ctrlFrame{kind: ctrlSettingsAck})
}

func (cc *clientConn) processHeaders(f *http2.MetaHeadersFrame) error {
	cc.mu.Lock()
	st := cc.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID >= cc.nextID || f.StreamID%2 == 0
		cc.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we already closed
	}
	answered := st.answered
	cc.mu.Unlock()

	if answered {
		// Trailers: legal only as the end of the server's half.
		if !f.StreamEnded() {
			cc.resetStream(st.id, http2.ErrCodeProtocol, true)
			return nil
		}
		st.peerEnded()
		return nil
	}
	status, ok := parseStatus(f.PseudoValue("status"))
	if !ok {
		cc.resetStream(st.id, http2.ErrCodeProtocol, true)
		return nil
	}
	if status < 200 {
		// Informational answers are skipped; the final one follows.
		if f.StreamEnded() {
			cc.resetStream(st.id, http2.ErrCodeProtocol, true)
		}
		return nil
	}
	cc.mu.Lock()
	st.answerLocked(status, nil)
	cc.mu.Unlock()
	if f.StreamEnded() {
		st.peerEnded()
	}
	return nil
}

// parseStatus parses a :status value: three digits, 100 to 999.
func parseStatus(v string) (int, bool) {
	status, err := strconv.Atoi(v)
	if err != nil || len(v) != 3 || status < 100 {
		return 0, false
	}
	return status, true
}

func (cc *clientConn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	cc.mu.Lock()
	if n > cc.recvAvail {
		cc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	cc.recvAvail -= n
	st := cc.streams[id]
	if st == nil || st.recvEnded || !st.answered {
		cc.creditConnLocked(n)
		idle := id >= cc.nextID || id%2 == 0
		cc.mu.Unlock()
		switch {
		case idle:
			return http2.ConnectionError(http2.ErrCodeProtocol)
		case st != nil && !st.answered:
			cc.resetStream(id, http2.ErrCodeProtocol, true) // DATA before the response
		case st != nil:
			return cc.queue(ctrlFrame{kind: ctrlRST, streamID: id, code: http2.ErrCodeStreamClosed})
		}
		return nil
	}
	if n > st.recvAvail {
		cc.creditConnLocked(n)
		cc.mu.Unlock()
		cc.resetStream(id, http2.ErrCodeFlowControl, true)
		return nil
	}
	st.recvAvail -= n
	if pad := n - int64(len(data)); pad > 0 {
		cc.creditConnLocked(pad)
		st.recvAvail += pad
		if err := cc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, streamID: id, incr: uint32(pad)}); err != nil {
			cc.mu.Unlock()
			return err
		}
	}
	ended := f.StreamEnded()
	if ended {
		st.recvEnded = true
	}
	cc.mu.Unlock()

	st.deliver(data, ended)
	if ended {
		cc.maybeRemove(st)
	}
	return nil
}

func (cc *clientConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	if f.StreamID == 0 {
		cc.sendWindow += int64(f.Increment)
		if cc.sendWindow > math.MaxInt32 {
			cc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		cc.wakeWritersLocked()
		cc.mu.Unlock()
		return nil
	}
	st := cc.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID >= cc.nextID
		cc.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > math.MaxInt32 {
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeFlowControl, true)
		return nil
	}
	cc.wakeWritersLocked()
	cc.mu.Unlock()
	return nil
}

// processGoAway stops new streams; streams above the last one the server
// will process fail as refused, the others carry on.
func (cc *clientConn) processGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	var refused []*ClientStream
	for id, st := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, st)
		}
	}
	cc.mu.Unlock()
	if f.ErrCode != http2.ErrCodeNo {
		cc.log.Debug("hbone connection got GOAWAY", "code", f.ErrCode.String())
	}
	for _, st := range refused {
		err := fmt.Errorf("%w: %w by GOAWAY", ErrStreamReset, errRefused)
		cc.mu.Lock()
		cc.resetStreamLocked(st, err)
		cc.mu.Unlock()
		st.fail(err)
	}
}

// creditConnLocked accounts n consumed connection-level bytes and queues a
// WINDOW_UPDATE once a quarter of the window is outstanding. cc.mu is held.
func (cc *clientConn) creditConnLocked(n int64) {
	cc.recvUnacked += n
	if cc.recvUnacked >= ConnWindow/4 {
		incr := cc.recvUnacked
		cc.recvUnacked = 0
		cc.recvAvail += incr
		_ = cc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, incr: uint32(incr)})
	}
}

func (cc *clientConn) creditConn(n int) {
	if n <= 0 {
		return
	}
	cc.mu.Lock()
	cc.creditConnLocked(int64(n))
	cc.mu.Unlock()
}

// consumed returns flow-control credit after st's reader took n bytes.
func (cc *clientConn) consumed(st *ClientStream, n int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.creditConnLocked(int64(n))
	if st.recvEnded {
		return
	}
	st.recvUnacked += int64(n)
	if st.recvUnacked >= StreamWindow/4 {
		incr := st.recvUnacked
		st.recvUnacked = 0
		st.recvAvail += incr
		_ = cc.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, streamID: st.id, incr: uint32(incr)})
	}
}

func (cc *clientConn) wakeWritersLocked() {
	close(cc.windowCh)
	cc.windowCh = make(chan struct{})
}

// awaitSend blocks until st may send and reserves up to want bytes of
// window, bounded by the server's max frame size.
func (cc *clientConn) awaitSend(st *ClientStream, want int) (int, error) {
	cc.mu.Lock()
	for {
		if st.sendErr != nil {
			err := st.sendErr
			cc.mu.Unlock()
			return 0, err
		}
		n := min(int64(want), cc.sendWindow, st.sendWindow, int64(cc.peerMaxFrame))
		if n > 0 {
			cc.sendWindow -= n
			st.sendWindow -= n
			cc.mu.Unlock()
			return int(n), nil
		}
		if st.wdl.passed() {
			cc.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		ch := cc.windowCh
		cc.mu.Unlock()
		<-ch // also closed when a write deadline passes
		cc.mu.Lock()
	}
}

// writeData sends one flow-controlled DATA frame of st, unless st was reset
// meanwhile (end frames are sent regardless). The frame joins the batch of
// a goroutine now writing when it can (frameWriter.joinData); the check of
// st's reset and the join happen under mu, so a RST_STREAM queued by a
// reset always follows the frame.
func (cc *clientConn) writeData(st *ClientStream, end bool, p []byte) error {
	cc.mu.Lock()
	serr := st.sendErr
	joined, err := false, error(nil)
	if end || serr == nil {
		joined, err = cc.w.joinData(st.id, end, p)
	}
	cc.mu.Unlock()
	if !end && serr != nil {
		return serr
	}
	if !joined {
		cc.w.lock()
		cc.mu.Lock()
		serr = st.sendErr
		cc.mu.Unlock()
		if !end && serr != nil {
			_ = cc.w.flushUnlock(nil)
			return serr
		}
		err = cc.w.flushUnlock(cc.w.putDataGather(st.id, end, p))
	}
	if err != nil {
		cc.close(err)
		return fmt.Errorf("%w: write: %w", ErrStreamReset, err)
	}
	return nil
}

func (cc *clientConn) queue(c ctrlFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.queueLocked(c)
}

func (cc *clientConn) queueLocked(c ctrlFrame) error {
	if cc.closed {
		return nil
	}
	if len(cc.ctrl) >= maxQueuedControlFrames {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	cc.ctrl = append(cc.ctrl, c)
	select {
	case cc.ctrlWake <- struct{}{}:
	default:
	}
	return nil
}

// writeLoop writes queued control frames until the connection closes.
func (cc *clientConn) writeLoop() {
	var batch []ctrlFrame
	for {
		select {
		case <-cc.ctx.Done():
			return
		case <-cc.ctrlWake:
		}
		cc.mu.Lock()
		batch, cc.ctrl = cc.ctrl, batch[:0]
		cc.mu.Unlock()
		cc.w.lock()
		_, err := writeCtrlFrames(cc.fr, batch)
		err = cc.w.flushUnlock(err)
		clear(batch)
		if err != nil {
			cc.close(err)
			return
		}
	}
}

// keepaliveLoop PINGs the server when nothing was received for the
// keepalive interval, and closes the connection when a PING stays
// unanswered for the keepalive timeout.
func (cc *clientConn) keepaliveLoop() {
	interval, timeout := cc.keepaliveInterval, cc.keepaliveTimeout
	t := time.NewTicker(max(min(interval, timeout)/4, time.Millisecond))
	defer t.Stop()
	lastFrames := cc.frames.Load()
	lastActive := time.Now()
	for {
		select {
		case <-cc.ctx.Done():
			return
		case now := <-t.C:
			if n := cc.frames.Load(); n != lastFrames {
				lastFrames, lastActive = n, now
			}
			cc.mu.Lock()
			switch {
			case cc.pingInFlight && now.Sub(cc.pingSentAt) >= timeout:
				cc.mu.Unlock()
				cc.log.Debug("hbone keepalive timeout", "remote", cc.raw.RemoteAddr().String())
				cc.close(errors.New("keepalive timeout"))
				return
			case !cc.pingInFlight && now.Sub(lastActive) >= interval:
				cc.pingCounter++
				for i := range cc.pingPayload {
					cc.pingPayload[i] = byte(cc.pingCounter >> (8 * i))
				}
				cc.pingInFlight = true
				cc.pingSentAt = now
				_ = cc.queueLocked(ctrlFrame{kind: ctrlPing, ping: cc.pingPayload})
			}
			cc.mu.Unlock()
		}
	}
}

func (cc *clientConn) writeGoAwayNow(code http2.ErrCode) {
	_ = cc.raw.SetWriteDeadline(time.Now().Add(time.Second))
	cc.w.lock()
	_ = cc.w.flushUnlock(cc.fr.WriteGoAway(0, code, nil))
}

// resetStream resets stream id locally; sendRST says whether to tell the
// server.
func (cc *clientConn) resetStream(id uint32, code http2.ErrCode, sendRST bool) {
	cc.mu.Lock()
	st := cc.streams[id]
	if st == nil {
		if sendRST {
			_ = cc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: id, code: code})
		}
		cc.mu.Unlock()
		return
	}
	who := "peer"
	if sendRST {
		who = "local"
	}
	var err error
	if code == http2.ErrCodeRefusedStream && !sendRST && !st.answered {
		err = fmt.Errorf("%w: %w (%s)", ErrStreamReset, errRefused, code)
	} else {
		err = fmt.Errorf("%w: %s %s", ErrStreamReset, who, code)
	}
	if sendRST {
		_ = cc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: id, code: code})
	}
	cc.resetStreamLocked(st, err)
	cc.mu.Unlock()
	st.fail(err)
}

// resetStreamLocked fails st's send half and its pending answer with err
// and removes it. cc.mu is held; the caller calls st.fail(err) after
// releasing it (st.rmu is never taken under cc.mu).
func (cc *clientConn) resetStreamLocked(st *ClientStream, err error) {
	if st.sendErr == nil || errors.Is(st.sendErr, errWriteClosed) {
		st.sendErr = err
	}
	st.sendDone = true
	st.recvEnded = true
	st.answerLocked(0, err)
	cc.removeLocked(st)
	cc.wakeWritersLocked()
}

func (cc *clientConn) maybeRemove(st *ClientStream) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if st.recvEnded && st.sendDone {
		cc.removeLocked(st)
	}
}

func (cc *clientConn) removeLocked(st *ClientStream) {
	delete(cc.streams, st.id)
}

// close tears the connection down once; open streams fail with
// ErrStreamReset and pending requests with a retryable error.
func (cc *clientConn) close(cause error) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.closed = true
	cc.broken.Store(true)
	err := fmt.Errorf("%w: %w", ErrStreamReset, errConnClosed)
	if cause != nil && !errors.Is(cause, net.ErrClosed) {
		err = fmt.Errorf("%w: %w: %w", ErrStreamReset, errConnClosed, cause)
	}
	streams := make([]*ClientStream, 0, len(cc.streams))
	for _, st := range cc.streams {
		if st.sendErr == nil || errors.Is(st.sendErr, errWriteClosed) {
			st.sendErr = err
		}
		st.sendDone = true
		st.recvEnded = true
		st.answerLocked(0, err)
		streams = append(streams, st)
	}
	clear(cc.streams)
	cc.wakeWritersLocked()
	cc.mu.Unlock()

	cc.cancel()
	// Close the socket, not TLS: a close_notify could block on a peer
	// that stopped reading.
	_ = cc.raw.Close()
	for _, st := range streams {
		st.fail(err)
	}
}
