package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenAccessLog: no path is no access log, the standard streams are the
// process's own, and a file is created or appended to, never truncated.
func TestOpenAccessLog(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.log")
	if err := os.WriteFile(existing, []byte("kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       any // the writer, or a file whose content ends as "kept\nline\n" or "line\n"
		wantErr    string
	}{
		{name: "off", path: "", want: nil},
		{name: "stdout", path: "/dev/stdout", want: os.Stdout},
		{name: "stderr", path: "/dev/stderr", want: os.Stderr},
		{name: "new file", path: filepath.Join(dir, "new.log"), want: "line\n"},
		{name: "existing file", path: existing, want: "kept\nline\n"},
		{name: "missing directory", path: filepath.Join(dir, "no", "such.log"), wantErr: "access log: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, closeFn, err := openAccessLog(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			content, isFile := tc.want.(string)
			if !isFile {
				if w != tc.want {
					t.Errorf("writer %v, want %v", w, tc.want)
				}
				closeFn()
				return
			}
			if _, err := w.Write([]byte("line\n")); err != nil {
				t.Fatal(err)
			}
			closeFn()
			if b, err := os.ReadFile(tc.path); err != nil || string(b) != content {
				t.Errorf("file %q (%v), want %q", b, err, content)
			}
		})
	}
}
