package hbone

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// recordingConn is a net.Conn that records writes and serves reads from a
// script of chunks, each returned by one Read, then err.
type recordingConn struct {
	net.Conn
	writes [][]byte
	reads  [][]byte
	err    error
	nReads int
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) Read(p []byte) (int, error) {
	c.nReads++
	if len(c.reads) == 0 {
		return 0, c.err
	}
	n := copy(p, c.reads[0])
	c.reads[0] = c.reads[0][n:]
	if len(c.reads[0]) == 0 {
		c.reads = c.reads[1:]
	}
	return n, nil
}

func TestCorkConnWrites(t *testing.T) {
	big := bytes.Repeat([]byte{7}, corkWriteSize-10)
	for _, tc := range []struct {
		name   string
		cork   bool
		writes [][]byte
		want   []int // sizes of the socket writes
	}{
		{"uncorked passes through", false, [][]byte{[]byte("ab"), []byte("cde")}, []int{2, 3}},
		{"corked batch is one write", true, [][]byte{[]byte("ab"), []byte("cde"), []byte("f")}, []int{6}},
		{"batch over capacity flushes first", true, [][]byte{big, []byte("0123456789abc")}, []int{len(big), 13}},
		{"write larger than the buffer goes straight out", true, [][]byte{[]byte("x"), make([]byte, corkWriteSize+1)}, []int{1, corkWriteSize + 1}},
		{"empty batch writes nothing", true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordingConn{}
			c := newCorkConn(rc)
			if tc.cork {
				c.cork()
			}
			var all []byte
			for _, w := range tc.writes {
				if n, err := c.Write(w); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
				all = append(all, w...)
			}
			if err := c.uncork(); err != nil {
				t.Fatal(err)
			}
			var sizes []int
			var got []byte
			for _, w := range rc.writes {
				sizes = append(sizes, len(w))
				got = append(got, w...)
			}
			if !equalInts(sizes, tc.want) || !bytes.Equal(got, all) {
				t.Errorf("socket writes %v (bytes equal: %v), want sizes %v", sizes, bytes.Equal(got, all), tc.want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCorkConnReads(t *testing.T) {
	errBoom := errors.New("boom")
	bulk := bytes.Repeat([]byte{1}, corkReadBulk)
	for _, tc := range []struct {
		name      string
		chunks    [][]byte
		err       error
		readSize  int
		wantReads int // socket reads to consume everything and see err
	}{
		// Small reads go straight into the caller's buffer.
		{"small reads unbuffered", [][]byte{[]byte("abc"), []byte("de")}, io.EOF, 100, 3},
		// After a bulk read the next one goes through the large buffer:
		// 40 KiB available arrive in one socket read although the caller
		// asks for 8 KiB at a time (direct reads would take five).
		{"bulk then buffered", [][]byte{bulk, bytes.Repeat([]byte{2}, 40<<10)}, io.EOF, corkReadBulk, 3},
		// A short read switches back to direct reads, and a full direct
		// read back to buffering: bulk, "abc" (buffered), 8 KiB direct,
		// the remaining 12 KiB buffered, EOF.
		{"short read ends buffering", [][]byte{bulk, []byte("abc"), bytes.Repeat([]byte{3}, 20<<10)}, io.EOF, corkReadBulk, 5},
		{"error after data is kept until drained", [][]byte{bulk, []byte("xyz")}, errBoom, corkReadBulk, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []byte
			for _, c := range tc.chunks {
				want = append(want, c...)
			}
			rc := &recordingConn{reads: tc.chunks, err: tc.err}
			c := newCorkConn(rc)
			var got []byte
			buf := make([]byte, tc.readSize)
			var err error
			for range 100 {
				var n int
				n, err = c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("final error %v, want %v", err, tc.err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("read %d bytes, want %d", len(got), len(want))
			}
			if rc.nReads != tc.wantReads {
				t.Errorf("socket reads = %d, want %d", rc.nReads, tc.wantReads)
			}
		})
	}
}
