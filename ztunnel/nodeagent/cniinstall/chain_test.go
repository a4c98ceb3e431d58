package cniinstall

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

const (
	calicoConflist = `{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[` +
		`{"type":"calico","log_level":"info","ipam":{"type":"calico-ipam"},"policy":{"type":"k8s"}},` +
		`{"type":"portmap","snat":true,"capabilities":{"portMappings":true}}]}`
	bridgeConf = `{"cniVersion":"0.4.0","name":"bridge","type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","subnet":"10.244.0.0/16"}}`
)

var plugin = map[string]any{"type": PluginType, "agent_socket": "/var/run/ztunnel/cni.sock"}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestEnsureChain(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		wantErr   error
		wantFile  string   // the primary afterwards
		wantFiles []string // every file afterwards
		changed   bool
		// wantPlugins are the chain's entries afterwards (the last one is
		// ours unless noted).
		wantPlugins []string
		version     string
	}{
		{name: "no config", files: nil, wantErr: ErrNoPrimaryConfig},
		{name: "only other files", files: map[string]string{"README": "x", ".hidden.conf": bridgeConf}, wantErr: ErrNoPrimaryConfig},
		{
			name: "conflist", files: map[string]string{"10-calico.conflist": calicoConflist},
			wantFile: "10-calico.conflist", wantFiles: []string{"10-calico.conflist"}, changed: true, version: "0.3.1",
			wantPlugins: []string{
				`{"type":"calico","log_level":"info","ipam":{"type":"calico-ipam"},"policy":{"type":"k8s"}}`,
				`{"type":"portmap","snat":true,"capabilities":{"portMappings":true}}`,
				`{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`,
			},
		},
		{
			name: "single conf converted", files: map[string]string{"10-bridge.conf": bridgeConf},
			wantFile: "10-bridge.conflist", wantFiles: []string{"10-bridge.conflist"}, changed: true, version: "0.4.0",
			wantPlugins: []string{bridgeConf, `{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`},
		},
		{
			name: "single conf as .json", files: map[string]string{"05-bridge.json": bridgeConf},
			wantFile: "05-bridge.conflist", wantFiles: []string{"05-bridge.conflist"}, changed: true, version: "0.4.0",
			wantPlugins: []string{bridgeConf, `{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`},
		},
		{
			name: "already installed",
			files: map[string]string{"10-calico.conflist": `{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[` +
				`{"type":"calico"},{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}]}`},
			wantFile: "10-calico.conflist", wantFiles: []string{"10-calico.conflist"}, changed: false, version: "0.3.1",
			wantPlugins: []string{`{"type":"calico"}`, `{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`},
		},
		{
			name: "outdated entry updated in place, duplicate dropped",
			files: map[string]string{"10-calico.conflist": `{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[` +
				`{"type":"calico"},{"type":"zmesh-cni","agent_socket":"/old.sock"},{"type":"portmap"},{"type":"zmesh-cni"}]}`},
			wantFile: "10-calico.conflist", wantFiles: []string{"10-calico.conflist"}, changed: true, version: "0.3.1",
			wantPlugins: []string{`{"type":"calico"}`, `{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`, `{"type":"portmap"}`},
		},
		{
			name:     "first by name wins, others untouched",
			files:    map[string]string{"20-other.conflist": calicoConflist, "10-bridge.conf": bridgeConf},
			wantFile: "10-bridge.conflist", wantFiles: []string{"10-bridge.conflist", "20-other.conflist"}, changed: true, version: "0.4.0",
			wantPlugins: []string{bridgeConf, `{"type":"zmesh-cni","agent_socket":"/var/run/ztunnel/cni.sock"}`},
		},
		{name: "malformed primary", files: map[string]string{"10-x.conflist": `{"plugins":`}, wantErr: errAny},
		{name: "conf without type", files: map[string]string{"10-x.conf": `{"name":"x"}`}, wantErr: errAny},
		{name: "only our plugin", files: map[string]string{"10-x.conf": `{"name":"x","type":"zmesh-cni"}`}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path, changed, err := EnsureChain(dir, plugin)
			switch {
			case errors.Is(tt.wantErr, errAny):
				if err == nil {
					t.Fatal("no error")
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if filepath.Base(path) != tt.wantFile || changed != tt.changed {
				t.Errorf("EnsureChain = %s, changed %v", path, changed)
			}
			if got := listDir(t, dir); !reflect.DeepEqual(got, tt.wantFiles) {
				t.Errorf("files %v, want %v", got, tt.wantFiles)
			}
			m := readJSON(t, path)
			if m["cniVersion"] != tt.version {
				t.Errorf("cniVersion %v", m["cniVersion"])
			}
			var want []any
			for _, p := range tt.wantPlugins {
				want = append(want, decode(t, p))
			}
			if !reflect.DeepEqual(m["plugins"], want) {
				t.Errorf("plugins %v\nwant %v", m["plugins"], want)
			}
			// Idempotent: a second run changes nothing.
			before, _ := os.ReadFile(path)
			path2, changed, err := EnsureChain(dir, plugin)
			after, _ := os.ReadFile(path)
			if err != nil || changed || path2 != path || string(before) != string(after) {
				t.Errorf("second run: %s changed=%v err=%v", path2, changed, err)
			}
			// Removal leaves the other plugins as they were.
			if _, changed, err := RemoveFromChain(dir); err != nil || !changed {
				t.Fatalf("RemoveFromChain: changed=%v err=%v", changed, err)
			}
			m = readJSON(t, path)
			others := []any{}
			for _, p := range want {
				if p.(map[string]any)["type"] != PluginType {
					others = append(others, p)
				}
			}
			if !reflect.DeepEqual(m["plugins"], others) {
				t.Errorf("after removal %v, want %v", m["plugins"], others)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestInstallBinary(t *testing.T) {
	src := filepath.Join(t.TempDir(), "zmesh-cni")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, want := range []bool{true, false} {
		wrote, err := InstallBinary(src, dir)
		if err != nil || wrote != want {
			t.Fatalf("run %d: wrote=%v err=%v", i, wrote, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, PluginType))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary %v %v", fi, err)
	}
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := InstallBinary(src, dir); err != nil || !wrote {
		t.Fatalf("update: wrote=%v err=%v", wrote, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, PluginType)); string(got) != "#!/bin/sh\necho v2\n" {
		t.Errorf("contents %q", got)
	}
	if names := listDir(t, dir); !reflect.DeepEqual(names, []string{PluginType}) {
		t.Errorf("leftovers: %v", names)
	}
	if _, err := InstallBinary(filepath.Join(t.TempDir(), "missing"), dir); err == nil {
		t.Error("missing source accepted")
	}
}
