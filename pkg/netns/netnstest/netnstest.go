// Package netnstest creates throw-away network namespaces and veth links for
// tests that need real kernel networking. Every helper registers its cleanup
// with t.Cleanup, so namespaces are deleted even when the test fails.
// Names include the process id so that concurrent test binaries on one
// machine never collide.
//
// The helpers shell out to iproute2's ip(8) and need root; call RequireRoot
// first (it skips the test otherwise).
package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zmesh/zmesh/pkg/netns"
)

// counter makes names unique within one process.
var counter atomic.Uint64

// RequireRoot skips t unless the process runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (run the tests as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 ip(8) not installed")
	}
}

// NS is a named network namespace created for a test.
type NS struct {
	// Name is the iproute2 name (ip netns exec NAME ...).
	Name string
	// Path is the bind mount, /run/netns/NAME.
	Path string
	// File is an open handle on the namespace, closed at cleanup.
	File *os.File
}

// New creates a named namespace whose name starts with prefix and contains
// the pid, brings its loopback up, and deletes it when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	name := fmt.Sprintf("zm-%s-%d-%d", prefix, os.Getpid(), counter.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	ns := &NS{Name: name, Path: filepath.Join("/run/netns", name)}
	f, err := netns.Open(ns.Path)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns.File = f
	t.Cleanup(func() { f.Close() })
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return ns
}

// Exec runs a command inside the namespace and returns its combined output,
// failing the test on error.
func (ns *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Veth links a and b with a veth pair: interface aIf in a with address aAddr
// and bIf in b with bAddr (prefixes such as 10.244.1.5/24; either may be
// invalid to leave that end unaddressed). Both ends are brought up. IPv6
// addresses are added with nodad so they are usable at once. The pair
// disappears with its namespaces.
func Veth(t testing.TB, a *NS, aIf string, aAddr netip.Prefix, b *NS, bIf string, bAddr netip.Prefix) {
	t.Helper()
	Run(t, "ip", "-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, end := range []struct {
		ns   *NS
		ifc  string
		addr netip.Prefix
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if end.addr.IsValid() {
			args := []string{"ip", "-n", end.ns.Name, "addr", "add", end.addr.String(), "dev", end.ifc}
			if end.addr.Addr().Is6() {
				args = append(args, "nodad")
			}
			Run(t, args...)
		}
		Run(t, "ip", "-n", end.ns.Name, "link", "set", end.ifc, "up")
	}
}

// Run runs a command and returns its combined output, failing the test on
// error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
