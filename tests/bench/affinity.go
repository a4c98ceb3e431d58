package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinThreads restricts every thread of pid to cpu (sched_setaffinity per
// thread, like taskset -a) and returns a function that gives every thread
// back pid's original CPU set. Threads created meanwhile inherit the pin
// from their creator; the loop repeats until a pass finds no new thread.
func pinThreads(pid, cpu int) (restore func() error, err error) {
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &orig); err != nil {
		return nil, fmt.Errorf("affinity of %d: %w", pid, err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	restore = func() error { return setAll(pid, &orig, nil) }
	done := map[int]bool{}
	for range 10 {
		before := len(done)
		if err := setAll(pid, &one, done); err != nil {
			_ = restore()
			return nil, err
		}
		if len(done) == before {
			return restore, nil
		}
	}
	return restore, nil
}

// setAll sets the affinity of every thread of pid not yet in done (all of
// them when done is nil) and records them in done.
func setAll(pid int, set *unix.CPUSet, done map[int]bool) error {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("threads of %d: %w", pid, err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || done[tid] {
			continue
		}
		// A thread may exit between the listing and the call.
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("affinity of thread %d of %d: %w", tid, pid, err)
		}
		if done != nil {
			done[tid] = true
		}
	}
	return nil
}
