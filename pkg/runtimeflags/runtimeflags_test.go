package runtimeflags

import (
	"flag"
	"log/slog"
	"testing"
)

func TestRegister(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	f.Register(fs, "proxy")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f != (Flags{}) {
		t.Errorf("defaults %+v", f)
	}
	if err := fs.Parse([]string{"--concurrency", "3"}); err != nil {
		t.Fatal(err)
	}
	if f != (Flags{Concurrency: 3}) {
		t.Errorf("parsed %+v", f)
	}
}

// Apply's scaling is procscale's, tested there; its refusal is tested here.
func TestApplyRefusesInvalidSettings(t *testing.T) {
	f := Flags{Concurrency: -1}
	if _, err := f.Apply(slog.New(slog.DiscardHandler)); err == nil {
		t.Errorf("Apply(%+v) = nil error", f)
	}
}
