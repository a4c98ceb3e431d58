package cniinstall

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
)

// ErrNoPrimaryConfig: the net directory holds no network configuration
// yet (the primary network plugin has not written it).
var ErrNoPrimaryConfig = errors.New("cniinstall: no CNI network configuration yet")

// configExts are the extensions runtimes load (libcni's ConfFiles).
var configExts = []string{".conf", ".conflist", ".json"}

// PrimaryConfig returns the path of the first network configuration file
// by name in dir, or ErrNoPrimaryConfig.
func PrimaryConfig(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", ErrNoPrimaryConfig
		}
		return "", fmt.Errorf("cniinstall: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") {
			continue
		}
		for _, ext := range configExts {
			if filepath.Ext(n) == ext {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return "", ErrNoPrimaryConfig
	}
	sort.Strings(names)
	return filepath.Join(dir, names[0]), nil
}

// conf is a network configuration as raw top-level fields, so that fields
// zmesh does not know survive a rewrite.
type conf map[string]json.RawMessage

func readConf(path string) (conf, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cniinstall: %w", err)
	}
	var c conf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("cniinstall: %s: %w", path, err)
	}
	if c == nil {
		return nil, fmt.Errorf("cniinstall: %s: not a JSON object", path)
	}
	return c, nil
}

func writeConf(path string, c conf) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("cniinstall: encode %s: %w", path, err)
	}
	return writeAtomic(path, 0o644, func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	})
}

// pluginType returns a chain entry's "type".
func pluginType(raw json.RawMessage) string {
	var p struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &p)
	return p.Type
}

// sameJSON compares two JSON documents by value.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// EnsureChain makes the primary configuration in dir a .conflist whose
// chain ends with plugin (which must have "type": PluginType), leaving the
// other entries as they are. A single-plugin configuration is converted
// into a list (written as <name>.conflist, the original removed). An entry
// of type PluginType already in the chain is updated in place. It returns
// the file it settled on and whether it wrote anything; ErrNoPrimaryConfig
// when dir has no configuration.
func EnsureChain(dir string, plugin map[string]any) (path string, changed bool, err error) {
	if plugin["type"] != PluginType {
		return "", false, fmt.Errorf("cniinstall: plugin config type %v, want %s", plugin["type"], PluginType)
	}
	want, err := json.Marshal(plugin)
	if err != nil {
		return "", false, fmt.Errorf("cniinstall: plugin config: %w", err)
	}
	path, err = PrimaryConfig(dir)
	if err != nil {
		return "", false, err
	}
	c, err := readConf(path)
	if err != nil {
		return path, false, err
	}
	if rawPlugins, ok := c["plugins"]; ok {
		var plugins []json.RawMessage
		if err := json.Unmarshal(rawPlugins, &plugins); err != nil {
			return path, false, fmt.Errorf("cniinstall: %s: plugins: %w", path, err)
		}
		found := false
		kept := plugins[:0:0]
		for _, p := range plugins {
			switch {
			case pluginType(p) != PluginType:
				kept = append(kept, p)
			case found: // a duplicate entry: dropped
				changed = true
			default:
				found = true
				if !sameJSON(p, want) {
					p = want
					changed = true
				}
				kept = append(kept, p)
			}
		}
		plugins = kept
		if !found {
			plugins = append(plugins, want)
			changed = true
		}
		if !changed {
			return path, false, nil
		}
		if c["plugins"], err = json.Marshal(plugins); err != nil {
			return path, false, fmt.Errorf("cniinstall: %w", err)
		}
		return path, true, writeConf(path, c)
	}
	// A single plugin: wrap it in a list of its own name and version.
	if _, ok := c["type"]; !ok {
		return path, false, fmt.Errorf("cniinstall: %s has neither plugins nor type", path)
	}
	if pluginType(mustJSON(c)) == PluginType {
		return path, false, fmt.Errorf("cniinstall: %s configures only %s: no primary network plugin", path, PluginType)
	}
	list := conf{"plugins": mustJSON([]json.RawMessage{mustJSON(c), want})}
	for _, k := range []string{"cniVersion", "name"} {
		if v, ok := c[k]; ok {
			list[k] = v
		}
	}
	out := strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	if out == path {
		return path, false, fmt.Errorf("cniinstall: %s: a .conflist without plugins", path)
	}
	if err := writeConf(out, list); err != nil {
		return path, false, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return out, true, fmt.Errorf("cniinstall: remove converted %s: %w", path, err)
	}
	return out, true, nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on values that came from JSON
	}
	return b
}

// RemoveFromChain takes every PluginType entry out of the primary
// configuration's chain. The file stays a .conflist. It reports whether it
// wrote; a directory without configuration is not an error.
func RemoveFromChain(dir string) (path string, changed bool, err error) {
	path, err = PrimaryConfig(dir)
	if errors.Is(err, ErrNoPrimaryConfig) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	c, err := readConf(path)
	if err != nil {
		return path, false, err
	}
	raw, ok := c["plugins"]
	if !ok {
		return path, false, nil // a single plugin: not ours to edit
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return path, false, fmt.Errorf("cniinstall: %s: plugins: %w", path, err)
	}
	kept := plugins[:0:0]
	for _, p := range plugins {
		if pluginType(p) != PluginType {
			kept = append(kept, p)
		}
	}
	if len(kept) == len(plugins) {
		return path, false, nil
	}
	c["plugins"] = mustJSON(kept)
	return path, true, writeConf(path, c)
}
