package timerslack

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// current returns the calling thread's timer slack; the caller has locked
// its goroutine to the thread.
func current() (time.Duration, error) {
	n, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("timerslack: read the timer slack: %w", err)
	}
	return time.Duration(n), nil
}

// Ensure makes the whole process run with the given timer slack. When the
// calling thread already has it, or slack is 0 (keep what was inherited),
// Ensure returns nil at once. Otherwise it sets the slack on the calling
// thread and re-executes the running binary (by its path while that still
// names it, else /proc/self/exe) with the same arguments and environment;
// that exec does not return. The new image finds the slack set and goes
// on, so it is executed once.
//
// Call it early in main: whatever was started before is discarded by the
// exec (descriptors opened without close-on-exec stay open). An error
// leaves the process's slack as it was; the caller may go on without it.
func Ensure(slack time.Duration) error {
	if slack < 0 {
		return fmt.Errorf("timerslack: negative slack %v", slack)
	}
	if slack == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := current()
	if err != nil {
		return err
	}
	if cur == slack {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack.Nanoseconds()), 0, 0, 0); err != nil {
		return fmt.Errorf("timerslack: set the timer slack to %v: %w", slack, err)
	}
	// A kernel that does not keep the value (it is clamped for real-time
	// threads) would exec this program forever; check before the exec.
	// Without the exec only this thread would have the new slack, and
	// goroutines share it at random: every failure below puts it back.
	restore := func() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(cur.Nanoseconds()), 0, 0, 0) }
	got, err := current()
	if err != nil {
		restore()
		return err
	}
	if got != slack {
		restore()
		return fmt.Errorf("timerslack: the kernel kept %v, not %v", got, slack)
	}
	path := selfPath()
	if err := syscall.Exec(path, os.Args, os.Environ()); err != nil {
		restore()
		return fmt.Errorf("timerslack: exec %s: %w", path, err)
	}
	return nil
}

// selfExe names the running binary whatever happened to its path.
const selfExe = "/proc/self/exe"

// selfPath returns the path to execute the running binary by: its own path
// while that still names the same file, so that the new image keeps the
// program's name (the kernel names a process after the file it executes,
// and "exe" in ps, top and killall would hide which program it is), else
// /proc/self/exe.
func selfPath() string {
	path, err := os.Readlink(selfExe)
	if err != nil || !filepath.IsAbs(path) {
		return selfExe
	}
	var running, named unix.Stat_t
	if unix.Stat(selfExe, &running) != nil || unix.Stat(path, &named) != nil ||
		running.Dev != named.Dev || running.Ino != named.Ino {
		return selfExe // deleted or replaced since it started
	}
	return path
}
