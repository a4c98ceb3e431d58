package cniinstall

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasPlugin reports whether path's chain holds our entry.
func hasPlugin(path string) bool {
	c, err := readConf(path)
	if err != nil {
		return false
	}
	var plugins []map[string]any
	if err := json.Unmarshal(c["plugins"], &plugins); err != nil {
		return false
	}
	for _, p := range plugins {
		if p["type"] == PluginType {
			return true
		}
	}
	return false
}

// TestInstallerKeepsThePlugin: the installer waits for a configuration,
// adds the plugin, adds it again after the runtime rewrites the file, and
// removes it on Stop when asked to.
func TestInstallerKeepsThePlugin(t *testing.T) {
	bin, net := t.TempDir(), filepath.Join(t.TempDir(), "net.d")
	src := filepath.Join(t.TempDir(), "zmesh-cni")
	if err := os.WriteFile(src, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := New(Config{BinDir: bin, PluginBinary: src, NetDir: net, Plugin: map[string]any{"agent_socket": "/s"},
		UninstallOnExit: true, Debounce: 10 * time.Millisecond, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			in.Stop()
		}
	}()
	if _, err := os.Stat(filepath.Join(bin, PluginType)); err != nil {
		t.Fatalf("binary not installed: %v", err)
	}
	// No configuration yet: the runtime writes one later.
	conflist := filepath.Join(net, "10-calico.conflist")
	if err := os.WriteFile(conflist, []byte(calicoConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "plugin added", func() bool { return hasPlugin(conflist) })
	// The primary plugin rewrites its file (without us).
	if err := os.WriteFile(conflist, []byte(calicoConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "plugin added again", func() bool { return hasPlugin(conflist) })
	in.Stop()
	stopped = true
	if hasPlugin(conflist) {
		t.Fatal("plugin still in the chain after Stop with UninstallOnExit")
	}
	if !sameJSON(mustRead(t, conflist), []byte(calicoConflist)) {
		t.Errorf("chain after uninstall differs from the original: %s", mustRead(t, conflist))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
