package kubesource

import (
	"cmp"
	"errors"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/zmesh/zmesh/controller/index"
)

// objKey names one object of one kind.
type objKey struct{ kind, namespace, name string }

// verdict is Validate's answer for one version of an object.
type verdict struct {
	resourceVersion string
	err             error
	gen             uint64 // the last snapshot that saw the object
}

// seenObject is one cached object's verdict and the last snapshot that
// listed that very object.
type seenObject struct {
	v   *verdict
	gen uint64
}

// deliver assembles a snapshot and hands it to OnChange. Only Start (before
// the coalescing goroutine runs) and that goroutine call it.
func (s *Source) deliver() {
	in, problems := s.snapshot()
	s.mu.Lock()
	s.problems = problems
	s.mu.Unlock()
	s.opts.OnChange(in)
}

// snapshot lists every followed cache into fresh Inputs, leaving out
// objects Validate rejects. Validation is remembered per object version, so
// an unchanged object is validated (and a rejection logged) once.
func (s *Source) snapshot() (*index.Inputs, []index.Problem) {
	s.gen++
	in := &index.Inputs{}
	var problems []index.Problem
	for _, f := range s.followed {
		for _, item := range f.store.List() {
			obj, ok := item.(runtime.Object)
			if !ok {
				continue
			}
			if index.EnforcedWhenInvalid(obj) {
				in.Add(obj) // the index validates it, and reports and replaces it if invalid
				continue
			}
			if err := s.validate(f.kind.name, obj); err != nil {
				m, _ := obj.(metav1.Object)
				problems = append(problems, index.Problem{
					Kind: f.kind.name, Namespace: m.GetNamespace(), Name: m.GetName(), Reason: reason(err),
				})
				continue
			}
			in.Add(obj)
		}
	}
	for k, v := range s.verdicts {
		if v.gen != s.gen {
			delete(s.verdicts, k)
		}
	}
	for o, e := range s.seen {
		if e.gen != s.gen {
			delete(s.seen, o)
		}
	}
	slices.SortFunc(problems, func(a, b index.Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return in, problems
}

// validate runs Options.Validate on obj unless this object, or this
// version of it, was validated before, and logs a rejection the first time
// it is seen.
func (s *Source) validate(kind string, obj runtime.Object) error {
	if s.opts.Validate == nil {
		return nil
	}
	// Cached objects are never modified (an update replaces the object),
	// so the same object has the same verdict: no need to build its key.
	if e := s.seen[obj]; e != nil {
		e.gen = s.gen
		e.v.gen = s.gen
		return e.v.err
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return s.opts.Validate(obj)
	}
	key := objKey{kind: kind, namespace: m.GetNamespace(), name: m.GetName()}
	rv := m.GetResourceVersion()
	if v := s.verdicts[key]; v != nil && rv != "" && v.resourceVersion == rv {
		v.gen = s.gen
		s.seen[obj] = &seenObject{v: v, gen: s.gen}
		return v.err
	}
	err := s.opts.Validate(obj)
	if errors.Is(err, index.ErrUnsupportedKind) {
		err = nil // a kind the validator has no rules for (the L7 kinds)
	}
	if err != nil {
		s.log.Warn("object rejected; left out of the served state", "kind", kind,
			"namespace", key.namespace, "name", key.name, "resourceVersion", rv, "reason", reason(err))
	}
	v := &verdict{resourceVersion: rv, err: err, gen: s.gen}
	s.verdicts[key] = v
	s.seen[obj] = &seenObject{v: v, gen: s.gen}
	return err
}

// reason renders a validation error without repeating the object's name.
func reason(err error) string {
	if ie, ok := errors.AsType[*index.InvalidError](err); ok {
		return strings.Join(ie.Reasons, "; ")
	}
	return err.Error()
}
