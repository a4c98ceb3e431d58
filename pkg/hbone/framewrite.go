package hbone

import (
	"bufio"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frameWriteBufferSize is the size of a connection's frame write buffer: one
// full TLS record, so a DATA frame's header and the first part of its
// payload form one record and the rest of a large payload bypasses the
// buffer.
const frameWriteBufferSize = 16 << 10

const (
	// frameHeaderLen is the length of an HTTP/2 frame header.
	frameHeaderLen = 9
	// maxJoinedData is the largest DATA payload another goroutine's write
	// may carry (frameWriter.joinData): one TLS record. Larger frames are
	// written by their own goroutine, straight from the caller's slice.
	maxJoinedData = 16 << 10
	// maxJoinedBytes bounds the frames waiting for the writing goroutine;
	// past it, writers wait for the write lock instead.
	maxJoinedBytes = 64 << 10
)

var joinedPool = sync.Pool{New: func() any { b := make([]byte, 0, maxJoinedBytes); return &b }}

// frameWriter is the write side of an HBONE connection. It orders frame
// writes and sends them through TLS with as few system calls as concurrent
// writers allow.
//
// One goroutine at a time writes: it calls lock, writes frames to bw (and
// the connection's framer, which writes to bw), and calls flushUnlock,
// which sends everything in one socket write. While a goroutine writes,
// others with a small DATA frame to send hand it over with joinData, which
// copies the frame and returns at once; flushUnlock sends joined frames,
// in the order they were joined, before it releases the lock (looping while
// more arrive), so a burst of small frames from many streams costs one TLS
// write and one system call rather than one each. So that such a burst
// joins even when the writers share one processor, a goroutine about to
// send a small DATA frame first yields once (gather). A joined frame that
// cannot be sent fails the connection, which resets its stream.
type frameWriter struct {
	wmu  sync.Mutex // held by the writing goroutine (lock to flushUnlock); guards bw and corking
	cork *corkConn  // under TLS; corked while wmu is held
	bw   *bufio.Writer

	jmu    sync.Mutex // guards the fields below; never held while taking another lock
	busy   bool       // wmu is held and its holder sends joined before releasing it
	joined *[]byte    // frames joined while busy (pooled; nil when none)
	err    error      // the first write error; later joins fail with it
}

// init sets the writer over tls (whose socket is cork).
func (w *frameWriter) init(tls interface{ Write([]byte) (int, error) }, cork *corkConn) {
	w.cork = cork
	w.bw = bufio.NewWriterSize(tls, frameWriteBufferSize)
}

// lock makes the caller the writing goroutine and corks the socket.
func (w *frameWriter) lock() {
	w.wmu.Lock()
	w.jmu.Lock()
	w.busy = true
	w.jmu.Unlock()
	w.cork.cork()
}

// flushUnlock sends what was written since lock (unless err, the outcome
// of those writes, is set) and every frame joined meanwhile, then releases
// the lock. Frames joined before the send go out in the same socket write;
// it loops while more arrive. It returns the first error.
func (w *frameWriter) flushUnlock(err error) error {
	for {
		w.jmu.Lock()
		batch := w.joined
		w.joined = nil
		w.jmu.Unlock()
		if batch != nil && err == nil {
			_, err = w.bw.Write(*batch)
		}
		putJoined(batch)
		if err == nil {
			err = w.bw.Flush()
		}
		if uerr := w.cork.uncork(); err == nil {
			err = uerr
		}
		w.jmu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		if w.joined == nil || err != nil {
			batch = w.joined
			w.joined = nil
			w.busy = false
			w.jmu.Unlock()
			putJoined(batch)
			w.wmu.Unlock()
			return err
		}
		w.jmu.Unlock()
		w.cork.cork()
	}
}

func putJoined(b *[]byte) {
	if b != nil {
		*b = (*b)[:0]
		joinedPool.Put(b)
	}
}

// joinData hands a DATA frame (already flow-controlled) to the goroutine
// now writing, if there is one, the payload is small and the batch has
// room; it reports whether it did. p is copied. A joined frame is sent
// before the writing goroutine releases the lock. When the connection
// already failed to write, joinData reports true and that error.
func (w *frameWriter) joinData(id uint32, end bool, p []byte) (bool, error) {
	if len(p) > maxJoinedData {
		return false, nil
	}
	w.jmu.Lock()
	defer w.jmu.Unlock()
	if w.err != nil {
		return true, w.err
	}
	if !w.busy {
		return false, nil
	}
	if w.joined == nil {
		w.joined = joinedPool.Get().(*[]byte)
	} else if len(*w.joined)+frameHeaderLen+len(p) > maxJoinedBytes {
		return false, nil
	}
	hdr := dataFrameHeader(id, end, len(p))
	*w.joined = append(append(*w.joined, hdr[:]...), p...)
	return true, nil
}

// writeData sends a DATA frame (already flow-controlled; len(p) within the
// peer's SETTINGS_MAX_FRAME_SIZE), joining the current writer's batch when
// it can. A nil error means the frame was sent or joined.
func (w *frameWriter) writeData(id uint32, end bool, p []byte) error {
	if joined, err := w.joinData(id, end, p); joined {
		return err
	}
	w.lock()
	return w.flushUnlock(w.putDataGather(id, end, p))
}

// putDataGather writes a DATA frame like putDataFrame and, when its payload
// is small enough to be joined, gives the goroutines that are ready to run
// a turn before the caller sends it (gather). The caller holds the lock.
func (w *frameWriter) putDataGather(id uint32, end bool, p []byte) error {
	err := w.putDataFrame(id, end, p)
	if err == nil && len(p) <= maxJoinedData {
		w.gather()
	}
	return err
}

// gather yields the processor once while the caller holds the lock and
// w is marked busy. A read that woke several streams at once (a burst of
// requests on separate streams, or their answers) has made their
// goroutines ready to run; they now run first, and the small frames they
// write join the caller's batch (joinData) instead of each taking the lock
// for a TLS write and a system call of its own. That is an event loop's
// write coalescing: the whole burst leaves in one socket write, and the
// peer reads it with one wake-up. When nothing else is ready to run the
// yield returns at once. The caller holds the lock.
func (w *frameWriter) gather() { runtime.Gosched() }

// putDataFrame writes a DATA frame's header and payload to bw without
// assembling the frame in a separate buffer (as http2.Framer.WriteData
// does). The caller holds the lock.
func (w *frameWriter) putDataFrame(id uint32, end bool, p []byte) error {
	hdr := dataFrameHeader(id, end, len(p))
	if w.bw.Available() < len(hdr) {
		if err := w.bw.Flush(); err != nil {
			return err
		}
	}
	// Appending to AvailableBuffer copies hdr into bw's own buffer, so
	// hdr stays on the stack (bw.Write(hdr[:]) would move it to the heap).
	if _, err := w.bw.Write(append(w.bw.AvailableBuffer(), hdr[:]...)); err != nil {
		return err
	}
	_, err := w.bw.Write(p)
	return err
}

func dataFrameHeader(id uint32, end bool, n int) [frameHeaderLen]byte {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	return [frameHeaderLen]byte{
		byte(n >> 16), byte(n >> 8), byte(n),
		byte(http2.FrameData), byte(flags),
		byte(id >> 24 & 0x7f), byte(id >> 16), byte(id >> 8), byte(id),
	}
}

// tableLimit hands a peer's SETTINGS_HEADER_TABLE_SIZE from the read loop
// to the goroutine that writes the next header block (under the write
// lock), so the read loop never waits for the write lock. HPACK wants the
// table size update at the start of the next block anyway.
type tableLimit struct{ v atomic.Uint64 } // 0: none pending; else the value + 1

func (t *tableLimit) offer(v uint32) { t.v.Store(uint64(v) + 1) }

// apply gives enc the pending limit, if any. The caller holds the write lock.
func (t *tableLimit) apply(enc *hpack.Encoder) {
	if x := t.v.Swap(0); x != 0 {
		enc.SetMaxDynamicTableSizeLimit(uint32(x - 1))
	}
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
