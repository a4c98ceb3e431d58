package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrRestore reports that the OS thread could not be switched back to its
// original namespace after running a function. The thread is then left
// locked so that the Go runtime terminates it instead of reusing it.
var ErrRestore = errors.New("netns: cannot restore the thread's network namespace")

// threadNSPath names the calling thread's own network namespace. A process's
// threads can be in different namespaces, so /proc/self would be wrong.
const threadNSPath = "/proc/thread-self/ns/net"

// panicError carries a panic from the locked goroutine back to the caller,
// which re-panics with the original value.
type panicError struct{ value any }

// Do runs fn with the calling goroutine's work moved to a fresh, locked OS
// thread that has joined the network namespace ns. When fn returns (or
// panics) the thread is switched back to its original namespace and
// unlocked; if that fails the thread stays locked and is discarded by the
// runtime when its goroutine exits, and Do returns an error wrapping
// ErrRestore.
//
// fn runs on a different goroutine from the caller. Goroutines it starts run
// on other threads and are NOT in ns; sockets it creates stay in ns. A panic
// in fn is re-raised in the caller's goroutine. Do does not close ns.
func Do(ns *os.File, fn func() error) error {
	if ns == nil {
		return errors.New("netns: nil namespace file")
	}
	type result struct {
		err   error
		panic *panicError
	}
	done := make(chan result, 1)
	go func() {
		// Never unlock unless the thread is known to be back where it started.
		runtime.LockOSThread()
		var res result
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
			done <- res
		}()
		orig, err := os.Open(threadNSPath)
		if err != nil {
			res.err = fmt.Errorf("netns: open current namespace: %w", err)
			restored = true
			return
		}
		defer orig.Close()
		if err := setns(ns); err != nil {
			res.err = fmt.Errorf("netns: enter namespace: %w", err)
			restored = true
			return
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					res.panic = &panicError{value: p}
				}
			}()
			res.err = fn()
		}()
		if err := setns(orig); err != nil {
			res.err = errors.Join(res.err, fmt.Errorf("%w: %w", ErrRestore, err))
			return
		}
		restored = true
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic.value)
	}
	return res.err
}

// DoPath is Do for a namespace named by path, for example
// /var/run/netns/<name> or /proc/<pid>/ns/net. It opens and closes the path
// itself.
func DoPath(path string, fn func() error) error {
	f, err := Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return Do(f, fn)
}

// setns moves the calling thread into the network namespace f.
func setns(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Setns(int(fd), unix.CLONE_NEWNET)
	}); err != nil {
		return err
	}
	return serr
}
