package hbone

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// gatedConn is a net.Conn whose writes are recorded and, while gate is
// non-nil, each wait for a value on it (so a test can hold a writer inside
// its system call).
type gatedConn struct {
	net.Conn
	gate    chan struct{}
	entered chan struct{} // gets a value as each gated write starts
	err     error

	mu     sync.Mutex
	writes [][]byte
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if c.gate != nil {
		c.entered <- struct{}{}
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *gatedConn) all() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.writes, nil)
}

// newTestFrameWriter returns a frameWriter straight over c (no TLS).
func newTestFrameWriter(c net.Conn) *frameWriter {
	cork := newCorkConn(c)
	w := &frameWriter{}
	w.init(cork, cork)
	return w
}

type gotFrame struct {
	id   uint32
	end  bool
	data string
}

func readDataFrames(t *testing.T, b []byte) []gotFrame {
	t.Helper()
	fr := http2.NewFramer(io.Discard, bytes.NewReader(b))
	var got []gotFrame
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("parse written frames: %v", err)
		}
		df, ok := f.(*http2.DataFrame)
		if !ok {
			t.Fatalf("unexpected frame %v", f.Header())
		}
		got = append(got, gotFrame{df.StreamID, df.StreamEnded(), string(df.Data())})
	}
}

// TestFrameWriterJoinsWhileBusy holds one writer inside its socket write and
// checks that frames written meanwhile are sent by it, in order, in one
// more socket write, and that what cannot join waits for the lock.
func TestFrameWriterJoinsWhileBusy(t *testing.T) {
	c := &gatedConn{gate: make(chan struct{}), entered: make(chan struct{}, 8)}
	w := newTestFrameWriter(c)

	if joined, _ := w.joinData(1, false, []byte("idle")); joined {
		t.Fatal("joinData joined with no goroutine writing")
	}
	done := make(chan error, 1)
	go func() { done <- w.writeData(1, false, []byte("first")) }()
	<-c.entered // the first writer is now in its socket write

	for i, f := range []gotFrame{{3, false, "a"}, {5, true, "b"}, {3, true, ""}} {
		if err := w.writeData(f.id, f.end, []byte(f.data)); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	if joined, _ := w.joinData(7, false, make([]byte, maxJoinedData+1)); joined {
		t.Error("a payload over maxJoinedData joined")
	}
	blocked := make(chan error, 1)
	go func() { blocked <- w.writeData(9, false, make([]byte, maxJoinedData+1)) }()

	c.gate <- struct{}{} // "first"
	<-c.entered
	c.gate <- struct{}{} // the joined batch
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-c.entered
	c.gate <- struct{}{} // the large frame, written by its own goroutine
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	c.gate = nil

	c.mu.Lock()
	sizes := make([]int, len(c.writes))
	for i, b := range c.writes {
		sizes[i] = len(b)
	}
	c.mu.Unlock()
	want := []int{frameHeaderLen + 5, 3*frameHeaderLen + 2, frameHeaderLen + maxJoinedData + 1}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("socket writes of %v bytes, want %v", sizes, want)
	}
	got := readDataFrames(t, c.all())
	wantFrames := []gotFrame{{1, false, "first"}, {3, false, "a"}, {5, true, "b"}, {3, true, ""}, {9, false, string(make([]byte, maxJoinedData+1))}}
	if fmt.Sprint(got) != fmt.Sprint(wantFrames) {
		t.Errorf("frames %v\nwant %v", got, wantFrames)
	}
}

func TestFrameWriterJoinLimit(t *testing.T) {
	w := newTestFrameWriter(&gatedConn{})
	w.lock()
	payload := make([]byte, maxJoinedData)
	n := 0
	for {
		joined, err := w.joinData(1, false, payload)
		if err != nil {
			t.Fatal(err)
		}
		if !joined {
			break
		}
		n++
	}
	if want := maxJoinedBytes / (frameHeaderLen + maxJoinedData); n != want {
		t.Errorf("%d frames joined before the limit, want %d", n, want)
	}
	if err := w.flushUnlock(nil); err != nil {
		t.Fatal(err)
	}
}

// TestFrameWriterFailureSticks checks that frames joined to a batch whose
// write fails make later writers fail too, rather than vanish.
func TestFrameWriterFailureSticks(t *testing.T) {
	boom := errors.New("boom")
	c := &gatedConn{err: boom}
	w := newTestFrameWriter(c)
	w.lock()
	if joined, err := w.joinData(1, false, []byte("x")); !joined || err != nil {
		t.Fatalf("joinData = %v, %v; want joined", joined, err)
	}
	if err := w.flushUnlock(w.putDataFrame(3, false, []byte("y"))); !errors.Is(err, boom) {
		t.Fatalf("flushUnlock = %v, want %v", err, boom)
	}
	if err := w.writeData(1, false, []byte("z")); !errors.Is(err, boom) {
		t.Errorf("writeData after the failure = %v, want %v", err, boom)
	}
}

// TestFrameWriterConcurrentStreams has many goroutines write small frames
// at once and checks that every stream's bytes arrive complete and in
// order, and that joining saved socket writes.
func TestFrameWriterConcurrentStreams(t *testing.T) {
	c := &gatedConn{}
	w := newTestFrameWriter(c)
	const streams, frames = 16, 200
	var wg sync.WaitGroup
	for s := range streams {
		wg.Go(func() {
			id := uint32(2*s + 1)
			for i := range frames {
				if err := w.writeData(id, i == frames-1, fmt.Appendf(nil, "%d.%d;", s, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := map[uint32]string{}
	ended := map[uint32]bool{}
	for _, f := range readDataFrames(t, c.all()) {
		if ended[f.id] {
			t.Fatalf("frame on stream %d after its end", f.id)
		}
		got[f.id] += f.data
		ended[f.id] = f.end
	}
	for s := range streams {
		id := uint32(2*s + 1)
		var want []byte
		for i := range frames {
			want = fmt.Appendf(want, "%d.%d;", s, i)
		}
		if got[id] != string(want) || !ended[id] {
			t.Errorf("stream %d: got %q (ended %v)", id, got[id], ended[id])
		}
	}
	c.mu.Lock()
	t.Logf("%d frames in %d socket writes", streams*frames, len(c.writes))
	c.mu.Unlock()
}

// TestFrameWriterGathersReadyWriters makes several stream writers ready to
// run at once on a single processor (as one read that wakes many streams
// does) and checks that their frames leave in one socket write: the first
// writer yields before sending (gather) and the others join its batch.
func TestFrameWriterGathersReadyWriters(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := &gatedConn{}
	w := newTestFrameWriter(c)
	const streams = 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	for s := range streams {
		wg.Go(func() {
			<-start
			if err := w.writeData(uint32(2*s+1), true, fmt.Appendf(nil, "answer %d", s)); err != nil {
				t.Error(err)
			}
		})
	}
	runtime.Gosched() // let every writer block on start
	close(start)
	wg.Wait()

	c.mu.Lock()
	writes := len(c.writes)
	c.mu.Unlock()
	// One write; two when the race detector's randomised scheduler lets
	// the first writer resume before the last has joined. Without gather
	// every frame takes its own.
	if writes > 2 {
		t.Errorf("%d frames ready at once took %d socket writes, want 1", streams, writes)
	}
	if got := readDataFrames(t, c.all()); len(got) != streams {
		t.Errorf("%d frames sent, want %d", len(got), streams)
	}
}
