package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cleanup removes what crashed runs with the given prefix (DefaultPrefix
// when empty) left behind: network namespaces named "<prefix>-<pid>-…"
// whose creating process no longer exists, every process still inside
// them, and their work directories "<prefix>-<pid>-…" in os.TempDir().
// Leftovers of live processes (concurrent runs) are not touched.
func Cleanup(prefix string) error {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !validPrefix(prefix) {
		return fmt.Errorf("cleanup: invalid prefix %q", prefix)
	}
	var errs []error
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	var stale []Netns
	for _, e := range entries {
		pid, ok := ownerPID(prefix, e.Name())
		if !ok || processAlive(pid) {
			continue
		}
		stale = append(stale, Netns{Name: e.Name(), Path: filepath.Join(netnsDir, e.Name())})
	}
	if err := removeNetnses(stale, time.Second); err != nil {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	dirs, err := os.ReadDir(os.TempDir())
	if err != nil {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	for _, d := range dirs {
		pid, ok := ownerPID(prefix, d.Name())
		if !d.IsDir() || !ok || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(os.TempDir(), d.Name())); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		}
	}
	if len(stale) > 0 {
		slog.Info("cluster: removed leftovers of crashed runs", "prefix", prefix, "netns", len(stale))
	}
	return errors.Join(errs...)
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeNetnses kills every process inside the given namespaces (SIGTERM,
// then SIGKILL after grace) and deletes them.
func removeNetnses(nss []Netns, grace time.Duration) error {
	if len(nss) == 0 {
		return nil
	}
	inodes := make(map[uint64]bool, len(nss))
	for _, n := range nss {
		if ino, err := netnsInode(n.Path); err == nil {
			inodes[ino] = true
		}
	}
	var errs []error
	if err := killInNetns(inodes, grace); err != nil {
		errs = append(errs, err)
	}
	for _, n := range nss {
		if err := deleteNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pidsInNetns lists the processes whose network namespace is one of inodes.
func pidsInNetns(inodes map[uint64]bool) []int {
	if len(inodes) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		ino, err := netnsInode("/proc/" + e.Name() + "/ns/net")
		if err != nil || !inodes[ino] {
			continue
		}
		if isZombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// isZombie reports whether pid has exited but not been reaped (it cannot be
// killed, only waited for by its parent).
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// killInNetns sends SIGTERM to every process in the namespaces, waits up to
// grace for them to go, then sends SIGKILL to the rest.
func killInNetns(inodes map[uint64]bool, grace time.Duration) error {
	pids := pidsInNetns(inodes)
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(pidsInNetns(inodes)) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pidsInNetns(inodes) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if len(pidsInNetns(inodes)) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := pidsInNetns(inodes); len(left) > 0 {
		return fmt.Errorf("processes %v survived SIGKILL", left)
	}
	return nil
}
