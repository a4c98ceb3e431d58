package zds

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// session is one ztunnel connection on the server side. run owns the
// connection's writes; a reader goroutine delivers responses.
type session struct {
	s    *Server
	conn *net.UnixConn
	log  *slog.Logger

	wake      chan struct{} // a request was queued
	closed    chan struct{} // close was called
	closeOnce sync.Once

	responses  chan []byte   // Ack payloads from the reader
	readerDone chan struct{} // the reader stopped (connection closed or failed)
}

func newSession(s *Server, conn *net.UnixConn) *session {
	return &session{
		s:          s,
		conn:       conn,
		log:        s.log,
		wake:       make(chan struct{}, 1),
		closed:     make(chan struct{}),
		responses:  make(chan []byte),
		readerDone: make(chan struct{}),
	}
}

func (ss *session) wakeUp() {
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// close shuts the connection; run then finishes on its own.
func (ss *session) close() {
	ss.closeOnce.Do(func() {
		close(ss.closed)
		_ = ss.conn.Close()
	})
}

// run performs hello, replay and live streaming until the connection ends.
func (ss *session) run() {
	defer ss.s.wg.Done()
	err := ss.serve()
	ss.close()
	<-ss.readerDone
	ss.s.detach(ss)
	if err != nil && !errors.Is(err, errReplaced) {
		ss.log.Info("ztunnel connection ended", "err", err)
	}
}

var errReplaced = errors.New("zds: session replaced or server stopped")

func (ss *session) serve() error {
	if err := ss.readHello(); err != nil {
		close(ss.readerDone)
		select {
		case <-ss.closed:
			return errReplaced
		default:
		}
		ss.log.Error("bad ztunnel hello, closing connection", "err", err)
		return err
	}
	go ss.reader()

	pods, snapGen, ok := ss.s.snapshot(ss)
	if !ok {
		return errReplaced
	}
	results := make(map[string]error, len(pods))
	var replayErr error
	for i, p := range pods {
		if replayErr != nil {
			p.ns.Close()
			continue
		}
		msg := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{
			Add: &zdsapi.AddWorkload{Uid: p.uid, WorkloadInfo: p.info},
		}}
		err := ss.exchange(msg, p.ns)
		p.ns.Close()
		pods[i] = nil
		var ackErr *AckError
		switch {
		case errors.As(err, &ackErr):
			ss.log.Warn("ztunnel rejected replayed pod", "uid", p.uid, "err", ackErr.Message)
			results[p.uid] = err
		case err != nil:
			replayErr = err
		default:
			results[p.uid] = nil
		}
	}
	if replayErr != nil {
		return replayErr
	}
	snap := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
	if err := ss.exchange(snap, nil); err != nil {
		var ackErr *AckError
		if !errors.As(err, &ackErr) {
			return err
		}
		ss.log.Warn("ztunnel rejected snapshot_sent", "err", ackErr.Message)
	}
	ss.s.snapshots.Add(1)
	ss.log.Info("snapshot replayed to ztunnel", "pods", len(results))

	for {
		r, current := ss.s.next(ss)
		if !current {
			return errReplaced
		}
		if r == nil {
			select {
			case <-ss.wake:
			case <-ss.readerDone:
				return ErrDisconnected
			case <-ss.closed:
				return errReplaced
			}
			continue
		}
		if r.gen <= snapGen {
			// Queued before the snapshot was taken, so the replay covered it.
			var err error
			if r.add {
				err = results[r.uid]
			}
			r.finish(err)
			continue
		}
		var msg *zdsapi.WorkloadRequest
		if r.add {
			msg = &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{
				Add: &zdsapi.AddWorkload{Uid: r.uid, WorkloadInfo: r.info},
			}}
		} else {
			msg = &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{
				Del: &zdsapi.DelWorkload{Uid: r.uid},
			}}
		}
		err := ss.exchange(msg, r.ns)
		var ackErr *AckError
		if err != nil && !errors.As(err, &ackErr) {
			r.finish(err)
			return err
		}
		if ackErr != nil {
			ss.log.Warn("ztunnel rejected request", "uid", r.uid, "add", r.add, "err", ackErr.Message)
		}
		r.finish(err)
	}
}

// readHello reads the first datagram, which must be ZdsHello{V1}.
func (ss *session) readHello() error {
	if err := ss.conn.SetReadDeadline(time.Now().Add(ss.s.cfg.HelloTimeout)); err != nil {
		return err
	}
	d, err := readDatagram(ss.conn)
	if d != nil {
		defer d.closeFiles()
	}
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if len(d.files) > 0 {
		return errors.New("hello carried file descriptors")
	}
	var hello zdsapi.ZdsHello
	if err := proto.Unmarshal(d.payload, &hello); err != nil {
		return fmt.Errorf("decode hello: %w", err)
	}
	if hello.GetVersion() != zdsapi.Version_V1 {
		return fmt.Errorf("unsupported ZDS version %v", hello.GetVersion())
	}
	return ss.conn.SetReadDeadline(time.Time{})
}

// reader forwards every datagram to exchange until the connection ends.
func (ss *session) reader() {
	defer close(ss.readerDone)
	for {
		d, err := readDatagram(ss.conn)
		if d != nil && len(d.files) > 0 {
			ss.log.Warn("ztunnel sent file descriptors; closing them", "count", len(d.files))
			d.closeFiles()
		}
		if err != nil {
			if !errors.Is(err, errTruncated) {
				return
			}
			ss.log.Warn("truncated datagram from ztunnel", "err", err)
			continue
		}
		select {
		case ss.responses <- d.payload:
		case <-ss.closed:
			return
		}
	}
}

// exchange sends one request (with f's descriptor, if any; f is not closed)
// and waits for its Ack. It returns nil, an *AckError, or a connection
// error after which the session must end.
func (ss *session) exchange(msg *zdsapi.WorkloadRequest, f *os.File) error {
	// Anything already buffered is unsolicited: it cannot be this request's Ack.
	for {
		select {
		case b := <-ss.responses:
			ss.log.Warn("unsolicited datagram from ztunnel dropped", "bytes", len(b))
			continue
		default:
		}
		break
	}
	if err := writeMessage(ss.conn, msg, f); err != nil {
		return fmt.Errorf("%w: send: %w", ErrDisconnected, err)
	}
	timer := time.NewTimer(ss.s.cfg.AckTimeout)
	defer timer.Stop()
	select {
	case b := <-ss.responses:
		var resp zdsapi.WorkloadResponse
		if err := proto.Unmarshal(b, &resp); err != nil {
			return fmt.Errorf("%w: undecodable response: %w", ErrDisconnected, err)
		}
		ack := resp.GetAck()
		if ack == nil {
			return fmt.Errorf("%w: response without ack", ErrDisconnected)
		}
		if ack.GetError() != "" {
			ss.s.ackErrors.Add(1)
			return &AckError{Message: ack.GetError()}
		}
		return nil
	case <-ss.readerDone:
		return ErrDisconnected
	case <-ss.closed:
		return ErrDisconnected
	case <-timer.C:
		ss.log.Error("ztunnel did not ack in time, closing connection", "timeout", ss.s.cfg.AckTimeout)
		return ErrAckTimeout
	}
}
