package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/pkg/netns"
)

// NetnsFinder locates pods' network namespaces by the addresses they hold,
// for pods the agent has no usable record of after a restart. It looks at
// every named namespace in NetnsDirs (where runtimes bind-mount sandbox
// namespaces, e.g. /var/run/netns) and at every process's namespace under
// ProcDir (the agent needs the host's PID namespace for that). Each
// namespace is entered once, however many paths lead to it.
type NetnsFinder struct {
	// ProcDir is the host's /proc; "" skips the process scan.
	ProcDir string
	// NetnsDirs are directories of namespace files.
	NetnsDirs []string
}

// nsID identifies a namespace independently of the path that opened it.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// candidates lists one path per distinct namespace: named ones first (their
// paths stay valid as long as the sandbox lives), then processes'.
func (f NetnsFinder) candidates() []string {
	seen := map[nsID]bool{}
	var out []string
	add := func(path string) {
		id, err := statNS(path)
		if err != nil || seen[id] {
			return
		}
		seen[id] = true
		out = append(out, path)
	}
	for _, dir := range f.NetnsDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			add(filepath.Join(dir, e.Name()))
		}
	}
	if f.ProcDir != "" {
		if self, err := statNS("/proc/self/ns/net"); err == nil {
			seen[self] = true // the agent's own (host) namespace holds no pod
		}
		entries, _ := os.ReadDir(f.ProcDir)
		pids := make([]string, 0, len(entries))
		for _, e := range entries {
			if n := e.Name(); n != "" && strings.Trim(n, "0123456789") == "" {
				pids = append(pids, n)
			}
		}
		sort.Strings(pids)
		for _, pid := range pids {
			add(filepath.Join(f.ProcDir, pid, "ns", "net"))
		}
	}
	return out
}

// Find returns, for each wanted address, the paths of the namespaces that
// hold it on an interface (more than one path means the address is
// ambiguous on this host). Namespaces that cannot be entered are skipped.
func (f NetnsFinder) Find(want []netip.Addr) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	if len(want) == 0 {
		return out
	}
	wanted := map[netip.Addr]bool{}
	for _, a := range want {
		wanted[a.Unmap()] = true
	}
	for _, path := range f.candidates() {
		addrs, err := addrsIn(path)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if wanted[a] {
				out[a] = append(out[a], path)
			}
		}
	}
	return out
}

// addrsIn lists the interface addresses inside the namespace at path.
func addrsIn(path string) ([]netip.Addr, error) {
	ns, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var out []netip.Addr
	err = netns.Do(ns, func() error {
		ifaddrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, ia := range ifaddrs {
			if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
				out = append(out, pfx.Addr().Unmap())
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nodeagent: addresses in %s: %w", path, err)
	}
	return out, nil
}

// errNoAddress: the namespace does not hold any of the pod's addresses.
var errNoAddress = errors.New("network namespace does not hold the pod's address")

// verifyNetns checks that path is a network namespace and, when the pod's
// addresses are known, that it holds one of them (a recorded
// /proc/<pid>/ns/net may now be another process's).
func verifyNetns(path string, ips []netip.Addr) error {
	if len(ips) == 0 {
		ns, err := netns.Open(path)
		if err != nil {
			return err
		}
		return ns.Close()
	}
	addrs, err := addrsIn(path)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		for _, ip := range ips {
			if a == ip.Unmap() {
				return nil
			}
		}
	}
	return fmt.Errorf("%s: %w", path, errNoAddress)
}
