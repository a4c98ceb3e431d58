package manifestdir

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func write(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("kind: X\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a.yaml", "b.YML", "c.json", "notes.txt", ".swap.yaml", ".hidden/d.yaml", "sub/e.yaml", "..data/f.yaml"} {
		write(t, filepath.Join(dir, f))
	}
	got, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i], _ = filepath.Rel(dir, got[i])
	}
	sort.Strings(got)
	want := []string{"a.yaml", "b.YML", "c.json", "sub/e.yaml"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestWatcherDebouncesAndFollowsNewDirectories(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWatcher(dir, 30*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	expect := func(what string) {
		t.Helper()
		select {
		case <-w.Changes():
		case <-time.After(5 * time.Second):
			t.Fatalf("no change reported: %s", what)
		}
	}
	// A burst of writes is one change.
	for i := 0; i < 5; i++ {
		write(t, filepath.Join(dir, "a.yaml"))
	}
	expect("burst")
	select {
	case <-w.Changes():
		t.Fatal("a burst was reported twice")
	case <-time.After(150 * time.Millisecond):
	}
	// A directory created later is watched too.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	expect("new directory")
	time.Sleep(50 * time.Millisecond)
	write(t, filepath.Join(dir, "sub", "b.yaml"))
	expect("file in the new directory")
}
