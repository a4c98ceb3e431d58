// Package manifestdir watches a directory of Kubernetes-style manifests: it
// lists the manifest files in it and reports, debounced, that something
// below it changed. The controller's local source and the node agent's pod
// source both read the same directory this way.
package manifestdir

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Files lists the *.yaml, *.yml and *.json files below dir, skipping hidden
// files and directories (editors' swap files, the ..data links of mounted
// ConfigMaps).
func Files(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if path != dir && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
			out = append(out, path)
		}
		return nil
	})
	return out, err
}

// Watcher signals changes below a directory, including directories created
// later. Create it with NewWatcher, call Run on a goroutine of your own, and
// Close it when done.
type Watcher struct {
	dir      string
	debounce time.Duration
	log      *slog.Logger
	w        *fsnotify.Watcher
	changes  chan struct{}
}

// NewWatcher starts watching dir and every directory below it. Changes are
// reported once the directory has been quiet for debounce. It fails if dir
// is not a readable directory.
func NewWatcher(dir string, debounce time.Duration, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	w := &Watcher{dir: dir, debounce: debounce, log: log, w: fw, changes: make(chan struct{}, 1)}
	w.addWatches(dir)
	return w, nil
}

// Changes receives a value after each burst of changes (several bursts
// while nobody reads coalesce into one).
func (w *Watcher) Changes() <-chan struct{} { return w.changes }

// Run forwards debounced changes until ctx is done or the watcher is closed.
func (w *Watcher) Run(ctx context.Context) {
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					w.addWatches(ev.Name)
				}
			}
			timer = time.After(w.debounce)
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			w.log.Warn("watch error; rescanning", "dir", w.dir, "err", err)
			timer = time.After(w.debounce)
		case <-timer:
			timer = nil
			select {
			case w.changes <- struct{}{}:
			default:
			}
		}
	}
}

// Close stops watching; Run returns.
func (w *Watcher) Close() error { return w.w.Close() }

// addWatches watches dir and every directory below it.
func (w *Watcher) addWatches(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if err := w.w.Add(path); err != nil {
				w.log.Warn("cannot watch directory", "path", path, "err", err)
			}
		}
		return nil
	})
}
