package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, fixed
// at 100 in the kernel's ABI).
const userHZ = 100

// Proc is a process whose resources are measured.
type Proc struct {
	Name string
	Pid  int
}

// cpuTime returns pid's user+system CPU time so far (its threads included;
// children not).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields after the last
	// ')' start at field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time of %d: malformed stat %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time of %d: short stat %q", pid, b)
	}
	// utime and stime are fields 14 and 15, i.e. f[11] and f[12].
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// syscalls returns pid's read and write system call counts so far
// (/proc/<pid>/io syscr and syscw).
func syscalls(pid int) (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("syscalls of %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("syscalls of %d: %w", pid, err)
		}
		if k == "syscr" {
			reads = n
		} else {
			writes = n
		}
	}
	return reads, writes, nil
}

// memKB returns a field of /proc/<pid>/status in KB (VmRSS, VmHWM...).
func memKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("%s of %d: %w", field, pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s of %d: %w", field, pid, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("%s of %d: not in /proc/%d/status", field, pid, pid)
}

// resetPeakRSS resets pid's VmHWM to its current RSS (clear_refs "5",
// Linux 4.0+), so VmHWM afterwards is the peak of what follows.
func resetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS of %d: %w", pid, err)
	}
	return nil
}

// Usage is what a process used during one run.
type Usage struct {
	Name string
	// CPU is user+system time during the run.
	CPU time.Duration
	// Wall is the run's duration.
	Wall time.Duration
	// PeakRSSKB is VmHWM after the run; PeakReset says whether it was
	// reset before the run (otherwise it is the process's lifetime peak).
	PeakRSSKB int64
	PeakReset bool
	// Requests served during the run (for CPU per request).
	Requests int64
	// ReadCalls and WriteCalls are the read and write system calls made
	// during the run (0 when /proc/<pid>/io is unreadable).
	ReadCalls, WriteCalls int64
}

// VCPUPer1kRPS is the CPU the process needs per 1000 requests/s: CPU
// seconds per 1000 requests.
func (u Usage) VCPUPer1kRPS() float64 {
	if u.Requests == 0 {
		return 0
	}
	return u.CPU.Seconds() * 1000 / float64(u.Requests)
}

// Utilisation is the average number of vCPUs busy during the run.
func (u Usage) Utilisation() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU.Seconds() / u.Wall.Seconds()
}

// usageMeter samples procs before and after a run.
type usageMeter struct {
	procs  []Proc
	start  time.Time
	before []time.Duration
	calls  [][2]int64
	reset  []bool
}

func startUsage(procs []Proc) (*usageMeter, error) {
	m := &usageMeter{procs: procs, before: make([]time.Duration, len(procs)), calls: make([][2]int64, len(procs)),
		reset: make([]bool, len(procs))}
	for i, p := range procs {
		m.reset[i] = resetPeakRSS(p.Pid) == nil
		m.calls[i][0], m.calls[i][1], _ = syscalls(p.Pid)
		t, err := cpuTime(p.Pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		m.before[i] = t
	}
	m.start = time.Now()
	return m, nil
}

func (m *usageMeter) stop(requests int64) ([]Usage, error) {
	wall := time.Since(m.start)
	out := make([]Usage, len(m.procs))
	for i, p := range m.procs {
		t, err := cpuTime(p.Pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		hwm, err := memKB(p.Pid, "VmHWM")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		out[i] = Usage{Name: p.Name, CPU: t - m.before[i], Wall: wall, PeakRSSKB: hwm, PeakReset: m.reset[i], Requests: requests}
		if r, w, err := syscalls(p.Pid); err == nil {
			out[i].ReadCalls, out[i].WriteCalls = r-m.calls[i][0], w-m.calls[i][1]
		}
	}
	return out, nil
}

// quietThreshold is the share of the machine's CPU time busy before the
// bench from which it warns: its processes then compete with the proxies.
const quietThreshold = 0.05

// machineBusy returns the share of all CPUs' time spent busy over d,
// from /proc/stat (everything but idle and iowait).
func machineBusy(ctx context.Context, d time.Duration) (float64, error) {
	before, err := cpuTimes()
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	after, err := cpuTimes()
	if err != nil {
		return 0, err
	}
	total := after.total - before.total
	if total == 0 {
		return 0, nil
	}
	return float64(total-(after.idle-before.idle)) / float64(total), nil
}

type cpuTimeSample struct{ total, idle uint64 }

// cpuTimes reads the aggregate "cpu" line of /proc/stat.
func cpuTimes() (cpuTimeSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimeSample{}, fmt.Errorf("machine CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimeSample{}, fmt.Errorf("machine CPU time: unexpected /proc/stat line %q", line)
	}
	var s cpuTimeSample
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTimeSample{}, fmt.Errorf("machine CPU time: %w", err)
		}
		s.total += n
		if i == 3 || i == 4 { // idle, iowait
			s.idle += n
		}
	}
	return s, nil
}

// noisyNeighbours are programs that, even idle, wake up every few
// milliseconds: the test control plane that `make test` leaves running.
var noisyNeighbours = []string{"kube-apiserver", "etcd", "kube-controller"}

// runningNeighbours returns which of noisyNeighbours run on the machine.
func runningNeighbours() []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var found []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		for _, n := range noisyNeighbours {
			if strings.HasPrefix(name, n) && !seen[n] {
				seen[n] = true
				found = append(found, n)
			}
		}
	}
	return found
}
