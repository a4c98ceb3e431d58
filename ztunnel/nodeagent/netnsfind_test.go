package nodeagent

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/zmesh/zmesh/pkg/netns/netnstest"
)

// TestNetnsFinder builds namespaces holding known addresses and checks that
// the finder maps each address to its one namespace (through any number of
// paths), reports an address held twice as ambiguous, and that verifyNetns
// refuses a namespace without the pod's address.
func TestNetnsFinder(t *testing.T) {
	netnstest.RequireRoot(t)
	a, b, c := netnstest.New(t, "fa"), netnstest.New(t, "fb"), netnstest.New(t, "fc")
	for _, x := range []struct {
		ns   *netnstest.NS
		addr string
	}{{a, "10.250.0.2/32"}, {b, "10.250.0.3/32"}, {c, "10.250.0.4/32"}, {c, "10.250.0.9/32"}, {b, "10.250.0.9/32"}} {
		x.ns.Exec(t, "ip", "addr", "add", x.addr, "dev", "lo")
	}
	dir := t.TempDir()
	for name, target := range map[string]string{"a": a.Path, "a-again": a.Path, "b": b.Path, "c": c.Path} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "not-a-netns"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := NetnsFinder{NetnsDirs: []string{dir, filepath.Join(dir, "missing")}}
	ip := netip.MustParseAddr
	got := f.Find([]netip.Addr{ip("10.250.0.2"), ip("10.250.0.3"), ip("10.250.0.9"), ip("10.250.0.77")})
	want := map[netip.Addr][]string{
		ip("10.250.0.2"): {filepath.Join(dir, "a")},
		ip("10.250.0.3"): {filepath.Join(dir, "b")},
		ip("10.250.0.9"): {filepath.Join(dir, "b"), filepath.Join(dir, "c")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Find = %v\nwant %v", got, want)
	}

	tests := []struct {
		name    string
		path    string
		ips     []netip.Addr
		wantErr error
	}{
		{"holds the address", a.Path, []netip.Addr{ip("10.250.0.2")}, nil},
		{"one of several", c.Path, []netip.Addr{ip("10.1.1.1"), ip("10.250.0.4")}, nil},
		{"another pod's namespace", b.Path, []netip.Addr{ip("10.250.0.2")}, errNoAddress},
		{"no addresses known", b.Path, nil, nil},
		{"not a namespace", filepath.Join(dir, "not-a-netns"), nil, errAnyErr},
		{"gone", filepath.Join(dir, "gone"), []netip.Addr{ip("10.250.0.2")}, errAnyErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyNetns(tt.path, tt.ips)
			switch {
			case errors.Is(tt.wantErr, errAnyErr):
				if err == nil {
					t.Fatal("accepted")
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			}
		})
	}
}

var errAnyErr = errors.New("any error")

func TestNetnsStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pods")
	s, err := NewNetnsStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A missing directory is an empty store.
	if recs, err := s.Load(testLogger(t)); err != nil || len(recs) != 0 {
		t.Fatalf("Load of a missing dir = %v, %v", recs, err)
	}
	recs := []NetnsRecord{
		{UID: "u1", Namespace: "n", Name: "a", Netns: "/var/run/netns/cni-1"},
		{UID: "u2", Namespace: "n", Name: "b", Netns: "/proc/42/ns/net"},
	}
	for _, r := range recs {
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	recs[0].Netns = "/var/run/netns/cni-1b" // replaced
	if err := s.Save(recs[0]); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden"} {
		if err := s.Save(NetnsRecord{UID: bad, Netns: "/x"}); err == nil {
			t.Errorf("uid %q accepted", bad)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "u3.json"), []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]NetnsRecord{"u1": recs[0], "u2": recs[1], "u3": {UID: "u3"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %v\nwant %v", got, want)
	}
	for _, uid := range []string{"u1", "u1", "u3"} {
		if err := s.Delete(uid); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = s.Load(testLogger(t))
	if len(got) != 1 || got["u2"] != recs[1] {
		t.Errorf("after Delete: %v", got)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
