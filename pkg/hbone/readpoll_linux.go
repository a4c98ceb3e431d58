//go:build linux

package hbone

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// readPoller waits for many idle TCP sockets to become readable without a
// goroutine per socket: each idle tcpSource is registered, one-shot, in an
// epoll instance of the poller's own, and that epoll instance is in turn
// waited on by one goroutine through Go's netpoller (an epoll descriptor
// is readable while it has ready events). A ready source is handed a new
// goroutine for its burst of reading, which re-arms it when the socket has
// nothing more to give.
//
// Closing a socket removes it from the epoll set silently, so a source
// whose connection is closed by someone else while idle is never woken by
// the kernel: SpliceHandle.Close ends its sources explicitly, and a sweep
// every sweepInterval ends any idle source whose connection was closed
// behind its back.
//
// One poller serves the whole process (sharedPoller); its goroutine lives
// as long as the process, like the runtime's own netpoller.
type readPoller struct {
	ep   *os.File // the epoll instance
	epfd int      // its descriptor (ep.Fd would switch it to blocking mode)
	rc   syscall.RawConn

	mu    sync.Mutex // guards srcs, next, sweep, dead, hot, cool
	srcs  map[uint64]*tcpSource
	next  uint64
	sweep *time.Timer // pending sweep; nil when none is scheduled
	dead  error       // why loop stopped; arm fails from then on

	// hot holds the sources whose burst waits in the netpoller after
	// moving data; cool runs while any is hot (see coolPeriod) and sends
	// those quiet for hotWindow (fewHotWindow while at most fewHot are
	// hot) to rest.
	hot      map[*tcpSource]struct{}
	cool     *time.Timer
	coolSoon bool // cool is due within hotWindow/2 (not fewHotWindow/2)
}

var (
	pollerOnce sync.Once
	poller     *readPoller
	errPoller  error
)

// sharedPoller returns the process's readPoller, starting it on first use.
func sharedPoller() (*readPoller, error) {
	pollerOnce.Do(func() { poller, errPoller = newReadPoller() })
	return poller, errPoller
}

func newReadPoller() (*readPoller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("hbone: epoll: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("hbone: epoll: %w", os.NewSyscallError("setnonblock", err))
	}
	// A non-blocking descriptor given to os.NewFile joins Go's netpoller.
	f := os.NewFile(uintptr(fd), "hbone-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("hbone: epoll: %w", err)
	}
	p := &readPoller{ep: f, epfd: fd, rc: rc, srcs: map[uint64]*tcpSource{}, hot: map[*tcpSource]struct{}{}}
	go p.loop()
	return p, nil
}

// loop collects ready sources and starts their bursts, forever.
func (p *readPoller) loop() {
	events := make([]syscall.EpollEvent, 64)
	for {
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			for {
				n, err := rawEpollWait(fd, events)
				if err != nil {
					werr = err
					return true
				}
				p.dispatch(events[:n])
				if n < len(events) {
					return false // drained: wait until the epoll set is ready again
				}
			}
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			// Never expected: the descriptor is ours and never closed.
			// Fail every idle source so that nothing waits forever.
			err = fmt.Errorf("hbone: epoll wait: %w", err)
			p.mu.Lock()
			p.dead = err
			p.mu.Unlock()
			p.failAll(err)
			return
		}
	}
}

func (p *readPoller) dispatch(events []syscall.EpollEvent) {
	for i := range events {
		id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
		p.mu.Lock()
		s := p.srcs[id]
		p.mu.Unlock()
		if s != nil {
			s.wake()
		}
	}
}

// arm registers s's socket fd (one-shot, for readability) on first use and
// re-enables it afterwards. The caller runs inside s's RawConn.Control, so
// fd is open and is s's. EPOLL_CTL_MOD re-checks readiness, so data that
// arrived before the call is not missed.
func (p *readPoller) arm(fd int, s *tcpSource) error {
	op := syscall.EPOLL_CTL_MOD
	if s.pollID == 0 {
		p.mu.Lock()
		if p.dead != nil {
			p.mu.Unlock()
			return p.dead
		}
		p.next++
		s.pollID = p.next
		p.srcs[s.pollID] = s
		if p.sweep == nil {
			p.sweep = time.AfterFunc(sweepInterval, p.sweepClosed)
		}
		p.mu.Unlock()
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(s.pollID)),
		Pad:    int32(uint32(s.pollID >> 32)),
	}
	if err := rawEpollCtl(p.epfd, op, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// forget drops s's registration record. Its epoll entry, if any, goes away
// when its socket is closed.
func (p *readPoller) forget(s *tcpSource) {
	if s.pollID == 0 {
		return
	}
	p.mu.Lock()
	delete(p.srcs, s.pollID)
	p.mu.Unlock()
}

// sweepClosed ends idle sources whose connection was closed directly, and
// schedules the next sweep while sources remain.
func (p *readPoller) sweepClosed() {
	for _, s := range p.sources() {
		s.endIfClosed()
	}
	p.mu.Lock()
	if len(p.srcs) > 0 {
		p.sweep.Reset(sweepInterval)
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
}

func (p *readPoller) failAll(err error) {
	for _, s := range p.sources() {
		s.abort(err)
	}
}

// sources lists the registered sources.
func (p *readPoller) sources() []*tcpSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	srcs := make([]*tcpSource, 0, len(p.srcs))
	for _, s := range p.srcs {
		srcs = append(srcs, s)
	}
	return srcs
}

// aLongTimeAgo is a read deadline that has passed: setting it wakes a read
// waiting in the netpoller with os.ErrDeadlineExceeded.
var aLongTimeAgo = time.Unix(1, 0)

// heat adds s, whose burst is about to wait in the netpoller, to the hot
// set.
func (p *readPoller) heat(s *tcpSource) {
	p.mu.Lock()
	p.hot[s] = struct{}{}
	switch many := len(p.hot) > fewHot; {
	case p.cool == nil:
		p.cool = time.AfterFunc(coolPeriod(many), p.coolDown)
		p.coolSoon = many
	case many && !p.coolSoon:
		p.cool.Reset(hotWindow / 2)
		p.coolSoon = true
	}
	p.mu.Unlock()
}

// coolPeriod is how often the cooler looks at the hot set: often enough
// to notice sources quiet for the window that applies (hotWindow with many
// hot sources, fewHotWindow with few), and no more often, so that a few
// busy connections cost no timer wake-ups to speak of.
func coolPeriod(many bool) time.Duration {
	if many {
		return hotWindow / 2
	}
	return fewHotWindow / 4
}

// unheat removes s from the hot set (its burst ends or rests).
func (p *readPoller) unheat(s *tcpSource) {
	p.mu.Lock()
	delete(p.hot, s)
	p.mu.Unlock()
}

// coolDown sends every hot source that read nothing for hotWindow (or
// fewHotWindow, see there) to rest: it leaves the hot set and its waiting
// read fails with a passed deadline, which its burst clears. Doing this
// under p.mu means a source is kicked only while its burst still counts it
// hot.
func (p *readPoller) coolDown() {
	now := monoNow()
	p.mu.Lock()
	defer p.mu.Unlock()
	window := hotWindow
	if len(p.hot) <= fewHot {
		window = fewHotWindow
	}
	for s := range p.hot {
		if time.Duration(now-s.lastData.Load()) >= window {
			delete(p.hot, s)
			_ = s.tc.SetReadDeadline(aLongTimeAgo)
		}
	}
	if len(p.hot) > 0 {
		p.coolSoon = len(p.hot) > fewHot
		p.cool.Reset(coolPeriod(p.coolSoon))
	} else {
		p.cool = nil
	}
}
