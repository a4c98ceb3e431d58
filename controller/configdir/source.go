package configdir

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/manifestdir"
)

// Options configures a Source.
type Options struct {
	// Dir is the directory read recursively for *.yaml, *.yml and *.json.
	Dir string
	// Validate checks one decoded object (index.Validate in production). A
	// file with an object that fails is treated as malformed. Optional.
	Validate func(runtime.Object) error
	// OnChange receives a complete snapshot after the first load and after
	// every reload that changes the effective objects. Calls never overlap.
	// Each call gets fresh Inputs holding deep copies: the callee owns them.
	OnChange func(*index.Inputs)
	// Debounce is the quiet period after a file event before reloading.
	// Default 50ms.
	Debounce time.Duration
	Logger   *slog.Logger
}

// Problem is a file that could not be used; its last good contents (if
// any) remain in effect.
type Problem struct {
	File   string
	Reason string
}

func (p Problem) String() string { return p.File + ": " + p.Reason }

// Source watches a directory of manifests.
type Source struct {
	opts    Options
	decoder *decoder
	log     *slog.Logger

	// mu guards files and problems.
	mu       sync.Mutex
	files    map[string]*fileState
	problems []Problem

	watcher *manifestdir.Watcher
	cancel  context.CancelFunc
	done    chan struct{}
}

// fileState is what one file last contributed.
type fileState struct {
	hash    [sha256.Size]byte
	objects []runtime.Object // last good contents
	err     error            // set while the current contents are bad
	// failClosed holds, while the contents are bad, the invalid policies
	// of the current contents that the last good contents lack. The index
	// enforces such a policy fail-closed (index.EnforcedWhenInvalid); left
	// out, a new ALLOW policy that fails validation would admit everyone.
	failClosed []runtime.Object
}

// New validates options; it does not touch the directory.
func New(opts Options) (*Source, error) {
	if opts.Dir == "" {
		return nil, errors.New("configdir: directory is required")
	}
	if opts.OnChange == nil {
		return nil, errors.New("configdir: OnChange is required")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Source{
		opts:    opts,
		decoder: newDecoder(),
		log:     opts.Logger.With("source", "configdir", "dir", opts.Dir),
		files:   map[string]*fileState{},
	}, nil
}

// Start loads the directory once, delivers the first snapshot, and starts
// watching for changes. It fails if the directory cannot be read; problems
// in individual files do not fail it (see Problems).
func (s *Source) Start(ctx context.Context) error {
	w, err := manifestdir.NewWatcher(s.opts.Dir, s.opts.Debounce, s.log)
	if err != nil {
		return fmt.Errorf("configdir: %w", err)
	}
	s.watcher = w
	if _, err := s.reload(true); err != nil {
		_ = w.Close()
		return err
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.watch(ctx)
	return nil
}

// Stop ends watching and waits for the watcher goroutine.
func (s *Source) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	_ = s.watcher.Close()
}

// Problems returns the files currently in error, sorted by file.
func (s *Source) Problems() []Problem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Problem(nil), s.problems...)
}

func (s *Source) watch(ctx context.Context) {
	defer close(s.done)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		s.watcher.Run(ctx)
	}()
	defer func() { <-watching }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.watcher.Changes():
			if _, err := s.reload(false); err != nil {
				s.log.Error("reload failed; keeping last good state", "err", err)
			}
		}
	}
}

// reload rescans the directory, re-parses files whose contents changed and
// delivers a snapshot when the effective objects changed (or on first load).
func (s *Source) reload(first bool) (bool, error) {
	paths, err := manifestdir.Files(s.opts.Dir)
	if err != nil {
		return false, fmt.Errorf("configdir: scan: %w", err)
	}
	s.mu.Lock()
	changed := first
	seen := map[string]bool{}
	for _, p := range paths {
		seen[p] = true
		data, err := os.ReadFile(p)
		if err != nil {
			// Vanished between scan and read, or unreadable: keep what we had.
			s.setError(p, fmt.Errorf("read: %w", err))
			continue
		}
		h := sha256.Sum256(data)
		if st, ok := s.files[p]; ok && st.hash == h {
			continue
		}
		objs, invalid, err := s.parse(data)
		st := s.files[p]
		if st == nil {
			st = &fileState{}
			s.files[p] = st
		}
		st.hash = h
		if err != nil {
			st.err = err
			fc := missingFrom(st.objects, invalid)
			changed = changed || len(fc) > 0 || len(st.failClosed) > 0
			st.failClosed = fc
			continue
		}
		st.objects, st.err, st.failClosed = objs, nil, nil
		changed = true
	}
	for p := range s.files {
		if !seen[p] {
			delete(s.files, p)
			changed = true
		}
	}
	in, problems := s.assemble()
	s.problems = problems
	s.mu.Unlock()

	for _, p := range problems {
		s.log.Warn("manifest rejected; its last good contents stay in effect", "file", p.File, "reason", p.Reason)
	}
	if changed {
		s.opts.OnChange(in)
	}
	return changed, nil
}

// setError records a read error for path; the caller holds s.mu.
func (s *Source) setError(path string, err error) {
	st := s.files[path]
	if st == nil {
		st = &fileState{}
		s.files[path] = st
	}
	st.err = err
}

// parse decodes and validates a whole file; any bad document rejects it.
// invalid lists the decoded objects that failed validation but that the
// index enforces fail-closed (index.EnforcedWhenInvalid), so that the
// caller can keep them in effect while the file is rejected.
func (s *Source) parse(data []byte) (objs, invalid []runtime.Object, err error) {
	objs, skipped, err := s.decoder.decodeAll(data)
	if err != nil {
		return nil, nil, err
	}
	for _, msg := range skipped {
		s.log.Debug("document skipped", "reason", msg)
	}
	var first error
	for i, obj := range objs {
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		if m.GetName() == "" {
			return nil, nil, fmt.Errorf("%s: metadata.name is required", kindOf(obj))
		}
		if m.GetNamespace() == "" && kindOf(obj) != "Namespace" {
			m.SetNamespace("default")
		}
		if s.opts.Validate != nil {
			// Kinds the index does not read (the L7 ones) are validated by
			// their own translation, which reports problems per object.
			if err := s.opts.Validate(obj); err != nil && !errors.Is(err, index.ErrUnsupportedKind) {
				if first == nil {
					first = fmt.Errorf("%s %s/%s: %w", kindOf(obj), m.GetNamespace(), m.GetName(), err)
				}
				if index.EnforcedWhenInvalid(obj) {
					invalid = append(invalid, obj)
				}
			}
		}
	}
	if first != nil {
		return nil, invalid, first
	}
	return objs, nil, nil
}

// objectKey names an object for duplicate detection: kind, namespace and
// name.
func objectKey(obj runtime.Object) string {
	m, _ := meta.Accessor(obj)
	return kindOf(obj) + " " + m.GetNamespace() + "/" + m.GetName()
}

// missingFrom returns the objects of invalid that good does not declare.
func missingFrom(good, invalid []runtime.Object) []runtime.Object {
	var out []runtime.Object
	for _, obj := range invalid {
		key := objectKey(obj)
		if !slices.ContainsFunc(good, func(g runtime.Object) bool { return objectKey(g) == key }) {
			out = append(out, obj)
		}
	}
	return out
}

// assemble builds Inputs from every file's good objects, in file-name order;
// an object declared twice keeps its first declaration. The caller holds s.mu.
func (s *Source) assemble() (*index.Inputs, []Problem) {
	var problems []Problem
	paths := make([]string, 0, len(s.files))
	for p := range s.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	in := &index.Inputs{}
	declared := map[string]string{}
	for _, p := range paths {
		st := s.files[p]
		rel := s.rel(p)
		if st.err != nil {
			reason := st.err.Error()
			if len(st.failClosed) > 0 {
				keys := make([]string, len(st.failClosed))
				for i, obj := range st.failClosed {
					keys[i] = objectKey(obj)
				}
				reason += "; enforced fail-closed meanwhile: " + strings.Join(keys, ", ")
			}
			problems = append(problems, Problem{File: rel, Reason: reason})
		}
		for _, obj := range slices.Concat(st.objects, st.failClosed) {
			key := objectKey(obj)
			if first, dup := declared[key]; dup {
				problems = append(problems, Problem{File: rel, Reason: fmt.Sprintf("%s already declared in %s; ignored", key, first)})
				continue
			}
			declared[key] = rel
			in.Add(obj.DeepCopyObject())
		}
	}
	return in, problems
}

func (s *Source) rel(p string) string {
	if r, err := filepath.Rel(s.opts.Dir, p); err == nil {
		return r
	}
	return p
}
