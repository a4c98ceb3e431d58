package hbone

// chunkQueue is a FIFO byte queue built from pooled fixed-size chunks, used
// for a stream's received-but-unread data. Memory is bounded by the stream's
// flow-control window. It is not safe for concurrent use; the owning stream's
// lock guards it.
type chunkQueue struct {
	pool   *BufferPool
	chunks []*[]byte
	r      int // read offset into chunks[0]
	w      int // write offset into chunks[len-1]
	n      int // bytes buffered
}

// len reports the number of buffered bytes.
func (q *chunkQueue) len() int { return q.n }

// write appends a copy of p.
func (q *chunkQueue) write(p []byte) {
	size := q.pool.Size()
	for len(p) > 0 {
		if len(q.chunks) == 0 || q.w == size {
			q.chunks = append(q.chunks, q.pool.Get())
			q.w = 0
		}
		c := copy((*q.chunks[len(q.chunks)-1])[q.w:], p)
		q.w += c
		q.n += c
		p = p[c:]
	}
}

// read moves up to len(p) bytes into p and returns how many.
func (q *chunkQueue) read(p []byte) int {
	size := q.pool.Size()
	total := 0
	for len(p) > 0 && q.n > 0 {
		end := size
		if len(q.chunks) == 1 {
			end = q.w
		}
		c := copy(p, (*q.chunks[0])[q.r:end])
		q.r += c
		q.n -= c
		total += c
		p = p[c:]
		if q.r == end {
			q.pool.Put(q.chunks[0])
			copy(q.chunks, q.chunks[1:])
			q.chunks[len(q.chunks)-1] = nil
			q.chunks = q.chunks[:len(q.chunks)-1]
			q.r = 0
			if len(q.chunks) == 0 {
				q.w = 0
			}
		}
	}
	return total
}

// release drops all buffered data and returns the chunks to the pool.
func (q *chunkQueue) release() {
	for i, c := range q.chunks {
		q.pool.Put(c)
		q.chunks[i] = nil
	}
	q.chunks = q.chunks[:0]
	q.r, q.w, q.n = 0, 0, 0
}
