package index

// ObjectSet is the identity of a list of input objects: which objects (by
// pointer, so an edited object, being a new one, differs) and how many
// times each was listed. It tells a consumer that gets one snapshot after
// another whether the objects it reads changed. The zero value is empty.
type ObjectSet struct {
	objects map[any]struct{}
	// repeated is true when an object was added twice (such a set is never
	// the same as another: the index refuses objects listed twice, so the
	// count of repeats matters).
	repeated bool
}

// AddObjects adds every object of list to s.
func AddObjects[T comparable](s *ObjectSet, list []T) {
	if s.objects == nil {
		s.objects = make(map[any]struct{}, len(list))
	}
	for _, o := range list {
		if _, dup := s.objects[o]; dup {
			s.repeated = true
		}
		s.objects[o] = struct{}{}
	}
}

// Same reports whether s and o hold the same objects, each listed once.
func (s ObjectSet) Same(o ObjectSet) bool {
	if s.repeated || o.repeated || len(s.objects) != len(o.objects) {
		return false
	}
	for k := range o.objects {
		if _, ok := s.objects[k]; !ok {
			return false
		}
	}
	return true
}
