package cniinstall

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// PluginType is the plugin's "type" in a network configuration and its
// binary's name.
const PluginType = "zmesh-cni"

// InstallBinary copies src to dir/zmesh-cni (mode 0755) unless that file
// already has the same contents. The copy is written next to its target and
// renamed over it, so a runtime executing the plugin meanwhile runs either
// the old or the new binary. It reports whether it wrote.
func InstallBinary(src, dir string) (bool, error) {
	dst := filepath.Join(dir, PluginType)
	want, err := fileHash(src)
	if err != nil {
		return false, fmt.Errorf("cniinstall: plugin binary: %w", err)
	}
	if have, err := fileHash(dst); err == nil && bytes.Equal(have, want) {
		return false, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("cniinstall: plugin binary: %w", err)
	}
	defer in.Close()
	if err := writeAtomic(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	}); err != nil {
		return false, err
	}
	return true, nil
}

func fileHash(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// writeAtomic writes path through a hidden temporary file in the same
// directory (runtimes ignore names without a .conf/.conflist/.json
// extension) that is synced and renamed into place.
func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cniinstall: write %s: %w", path, err)
	}
	ferr := fill(tmp)
	err = errors.Join(ferr, tmp.Chmod(mode), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cniinstall: write %s: %w", path, err)
	}
	return nil
}
