package log

import (
	"bytes"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "shown k=v") {
		t.Errorf("output %q", out)
	}
	if _, err := New(&buf, "loud"); err == nil {
		t.Error("bad level accepted")
	}
}
