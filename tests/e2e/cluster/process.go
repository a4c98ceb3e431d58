package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultStopTimeout is how long Process.Stop waits after SIGTERM before
// sending SIGKILL, when neither ProcessSpec nor Options set one.
const DefaultStopTimeout = 5 * time.Second

// ProcessSpec describes a process to run inside a namespace.
type ProcessSpec struct {
	// Name identifies the process in logs and names its log file
	// (<name>.log in the cluster's log directory). Required; unique among
	// the processes of one Cluster.
	Name string
	// Netns is where the process runs; the zero value is the caller's
	// namespace.
	Netns Netns
	// Path is the executable; Args are its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to the environment of the test process.
	Env []string
	// Dir is the working directory; empty means the cluster's work dir.
	Dir string
	// StopTimeout overrides the SIGTERM→SIGKILL grace period.
	StopTimeout time.Duration
}

// Process is a running (or finished) child process. Its stdout and stderr
// go to LogPath. It runs in its own process group and receives SIGKILL if
// the test process dies.
type Process struct {
	name        string
	netns       Netns
	logPath     string
	stopTimeout time.Duration
	cmd         *exec.Cmd
	done        chan struct{}
	err         error // exit status; read after done is closed
	stopOnce    sync.Once
	stopErr     error
	stopCalled  atomic.Bool // Stop was called (its error went to that caller)
}

// startProcess starts spec with output to logPath. The child is forked from
// an OS thread that has entered spec.Netns; that thread stays alive (parked
// in Wait) for as long as the child runs, because Pdeathsig fires when the
// forking thread exits.
func startProcess(spec ProcessSpec, logPath, dir string, stopTimeout time.Duration) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("process %s: open log: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = dir
	if spec.Dir != "" {
		cmd.Dir = spec.Dir
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if spec.StopTimeout > 0 {
		stopTimeout = spec.StopTimeout
	}
	p := &Process{
		name:        spec.Name,
		netns:       spec.Netns,
		logPath:     logPath,
		stopTimeout: stopTimeout,
		cmd:         cmd,
		done:        make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		defer logFile.Close()
		// Never unlocked: the thread is discarded with this goroutine.
		runtime.LockOSThread()
		if !spec.Netns.IsZero() {
			if err := enter(spec.Netns.Path); err != nil {
				started <- err
				return
			}
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start process %s in netns %s: %w", spec.Name, spec.Netns, err)
	}
	return p, nil
}

// Name returns the spec's name.
func (p *Process) Name() string { return p.name }

// Netns returns where the process runs.
func (p *Process) Netns() Netns { return p.netns }

// Pid returns the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath returns the file holding the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Log returns the process's output so far ("" if it cannot be read).
func (p *Process) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its wait error
// (nil for exit status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, SIGKILL after the stop timeout,
// and returns once the process has been reaped. It returns nil when the
// process exited (with any status) after SIGTERM or had already exited, and
// an error only when SIGKILL was needed or signalling failed. Safe to call
// more than once and concurrently.
func (p *Process) Stop() error {
	p.stopCalled.Store(true)
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		killGroup(pgid) // leftovers of the group, if any
		return nil
	default:
	}
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: SIGTERM: %w", p.name, err)
	}
	t := time.NewTimer(p.stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		killGroup(pgid)
		return nil
	case <-t.C:
	}
	killGroup(pgid)
	<-p.done
	return fmt.Errorf("stop %s: no exit %v after SIGTERM, killed", p.name, p.stopTimeout)
}

// killGroup sends SIGKILL to a process group, ignoring a group that is gone.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// runCommand runs spec to completion and returns its combined output.
// ctx cancellation kills it.
func runCommand(ctx context.Context, spec ProcessSpec, dir string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = dir
	if spec.Dir != "" {
		cmd.Dir = spec.Dir
	}
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := runInNetns(spec.Netns, cmd); err != nil {
		return out.Bytes(), fmt.Errorf("run %s in netns %s: %w", spec.Path, spec.Netns, err)
	}
	return out.Bytes(), nil
}

// runInNetns runs cmd to completion, forked from a thread inside ns (the
// zero Netns: the caller's namespace). The child gets SIGKILL if the
// forking thread (kept alive until the child is reaped) goes away.
func runInNetns(ns Netns, cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is discarded with this goroutine.
		runtime.LockOSThread()
		if !ns.IsZero() {
			if err := enter(ns.Path); err != nil {
				errc <- err
				return
			}
		}
		errc <- cmd.Run()
	}()
	return <-errc
}
