package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns names a network namespace bind-mounted under /var/run/netns. The
// zero value means "the caller's own namespace" wherever a Netns is
// accepted.
type Netns struct {
	// Name is the file name under /var/run/netns (what `ip netns` shows).
	Name string
	// Path is the full path of the bind mount.
	Path string
}

// IsZero reports whether n is the zero value (the caller's namespace).
func (n Netns) IsZero() bool { return n.Path == "" }

// String returns the namespace name, or "(current)" for the zero value.
func (n Netns) String() string {
	if n.IsZero() {
		return "(current)"
	}
	return n.Name
}

// Do runs fn on an OS thread that has entered n, and returns fn's error.
// The thread is discarded afterwards, so the namespace switch never leaks
// to other goroutines. Sockets created by fn stay in n when used later
// from any goroutine. fn must not start goroutines that expect to be in n.
func (n Netns) Do(fn func() error) error {
	if n.IsZero() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with this goroutine.
		runtime.LockOSThread()
		if err := enter(n.Path); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// enter switches the calling thread into the namespace at path.
func enter(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer closeFD(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}

// DialContext opens a connection from inside n, as a process in n would.
func (n Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from netns %s: %w", network, address, n, err)
	}
	return conn, nil
}

// Listen opens a listener inside n.
func (n Netns) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, n, err)
	}
	return l, nil
}

// HTTPClient returns a client whose connections are made from inside n,
// without keep-alives (each request is a new connection, as a test about
// per-connection behaviour usually wants) and with the given overall
// timeout per request.
func (n Netns) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
}

// WaitDial dials address over TCP from inside n until a connection
// succeeds (it is closed at once) or ctx ends.
func (n Netns) WaitDial(ctx context.Context, address string) error {
	var last error
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := n.DialContext(dctx, "tcp", address)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s from netns %s: %w (last error: %w)", address, n, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SetSysctl writes value to the sysctl key (dotted form, e.g.
// "net.ipv4.ip_forward") as seen from inside n.
func (n Netns) SetSysctl(key, value string) error {
	return n.Do(func() error {
		p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in netns %s: %w", key, value, n, err)
		}
		return nil
	})
}

// setSysctlIfPresent is SetSysctl that ignores keys the kernel does not
// have (bridge-nf-call-* exist only with br_netfilter loaded).
func (n Netns) setSysctlIfPresent(key, value string) error {
	err := n.SetSysctl(key, value)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// handle opens a netlink handle bound to n. Close it after use.
func (n Netns) handle() (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(n.Path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", n, err)
	}
	defer func() { _ = ns.Close() }()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n, err)
	}
	return h, nil
}

// fd opens n for passing to netlink as a namespace reference.
func (n Netns) fd() (int, error) {
	fd, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open netns %s: %w", n, err)
	}
	return fd, nil
}

// netnsDirOnce guards ensureNetnsDir.
var (
	netnsDirOnce sync.Once
	netnsDirErr  error
)

// ensureNetnsDir prepares /var/run/netns the way `ip netns add` does: a
// mount point with shared propagation, so namespace mounts made here are
// visible in every mount namespace. It is a no-op where iproute2 already
// did it.
func ensureNetnsDir() error {
	netnsDirOnce.Do(func() {
		if err := os.MkdirAll(netnsDir, 0o755); err != nil {
			netnsDirErr = fmt.Errorf("netns dir: %w", err)
			return
		}
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(err, unix.EINVAL) {
			// Not a mount point yet: bind it onto itself first.
			if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
				err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if err != nil {
			netnsDirErr = fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
		}
	})
	return netnsDirErr
}

// createNetns creates a new named network namespace with loopback up.
func createNetns(name string) (Netns, error) {
	n := Netns{Name: name, Path: filepath.Join(netnsDir, name)}
	if err := ensureNetnsDir(); err != nil {
		return Netns{}, err
	}
	errc := make(chan error, 1)
	go func() {
		// netns.NewNamed moves this thread into the new namespace; the
		// thread is discarded with the goroutine (never unlocked).
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		_ = h.Close()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		// NewNamed may have left the mount point behind.
		_ = deleteNetns(n)
		return Netns{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	return n, nil
}

// deleteNetns unmounts and removes a named namespace. The kernel frees the
// namespace (and its links and routes) once no process or socket holds it.
// A namespace that does not exist is not an error.
func deleteNetns(n Netns) error {
	if err := unix.Unmount(n.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", n.Path, err)
	}
	if err := os.Remove(n.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", n.Path, err)
	}
	return nil
}

// closeFD closes a file descriptor opened only for reading a namespace.
func closeFD(fd int) { _ = unix.Close(fd) }

// netnsInode returns the namespace inode behind a netns bind mount or a
// /proc/<pid>/ns/net link.
func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}
