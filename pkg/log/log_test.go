package log

import (
	"bytes"
	"errors"
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

func TestLastError(t *testing.T) {
	var l LastError
	a, b := errors.New("a"), errors.New("b")
	for i, tc := range []struct {
		err  error
		want bool
	}{{nil, false}, {a, true}, {a, false}, {errors.New("a"), false}, {b, true}, {nil, true}, {nil, false}} {
		if got := l.Changed(tc.err); got != tc.want {
			t.Errorf("step %d (%v): Changed = %v, want %v", i, tc.err, got, tc.want)
		}
	}
}
