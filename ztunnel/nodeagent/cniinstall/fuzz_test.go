package cniinstall

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEnsureChain: the primary configuration is written by other software;
// no content may panic, and whenever EnsureChain succeeds the result is a
// list holding our entry exactly once, and a second run changes nothing.
func FuzzEnsureChain(f *testing.F) {
	for _, s := range []string{calicoConflist, bridgeConf, `{}`, `[]`, `null`, `{"plugins":null}`, `{"plugins":[1,"x",null]}`,
		`{"type":"zmesh-cni"}`, `{"type":7}`, `{"plugins":[{"type":"zmesh-cni"},{"type":"zmesh-cni"}]}`} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, content string, list bool) {
		dir := t.TempDir()
		name := "10-x.conf"
		if list {
			name = "10-x.conflist"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		path, _, err := EnsureChain(dir, plugin)
		if err != nil {
			return
		}
		var c struct {
			Plugins []json.RawMessage `json:"plugins"`
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("result does not parse: %v: %s", err, data)
		}
		n := 0
		for _, p := range c.Plugins {
			if pluginType(p) == PluginType {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d entries of ours in %s", n, data)
		}
		if _, changed, err := EnsureChain(dir, plugin); err != nil || changed {
			t.Fatalf("second run: changed=%v err=%v", changed, err)
		}
	})
}
