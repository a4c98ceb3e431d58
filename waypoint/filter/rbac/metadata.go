package rbac

import (
	"errors"
	"fmt"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/zmesh/zmesh/waypoint/matcher"
)

// compileMetadata compiles a MetadataMatcher over Attributes.Metadata: the
// filter's map is walked along path, and the value found is matched.
func compileMetadata(m *matcherv3.MetadataMatcher) (func(*Attributes) bool, error) {
	if m.GetFilter() == "" || len(m.GetPath()) == 0 {
		return nil, errors.New("metadata matcher needs a filter and a path")
	}
	var path []string
	for _, seg := range m.GetPath() {
		if seg.GetKey() == "" {
			return nil, errors.New("metadata path segment without a key")
		}
		path = append(path, seg.GetKey())
	}
	vm, err := compileValue(m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("metadata %s%v: %w", m.GetFilter(), path, err)
	}
	filter, invert := m.GetFilter(), m.GetInvert()
	return func(a *Attributes) bool {
		v, ok := lookup(a.Metadata[filter], path)
		return (ok && vm(v)) != invert
	}, nil
}

// lookup walks nested maps; a path of ["request.auth.claims", "groups"]
// also finds a key containing dots in one step.
func lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, m != nil
}

func compileValue(v *matcherv3.ValueMatcher) (func(any) bool, error) {
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_PresentMatch:
		want := p.PresentMatch
		return func(any) bool { return want }, nil
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := matcher.CompileString(p.StringMatch)
		if err != nil {
			return nil, err
		}
		return func(x any) bool { return matchScalarOrList(x, sm) }, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		want := p.BoolMatch
		return func(x any) bool { b, ok := x.(bool); return ok && b == want }, nil
	case *matcherv3.ValueMatcher_ListMatch:
		inner, err := compileValue(p.ListMatch.GetOneOf())
		if err != nil {
			return nil, err
		}
		return func(x any) bool {
			switch l := x.(type) {
			case []any:
				for _, e := range l {
					if inner(e) {
						return true
					}
				}
			case string:
				// Space-delimited claims ("scope") count as lists, as in Istio.
				for _, e := range strings.Fields(l) {
					if inner(e) {
						return true
					}
				}
			}
			return false
		}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		var subs []func(any) bool
		for _, s := range p.OrMatch.GetValueMatchers() {
			c, err := compileValue(s)
			if err != nil {
				return nil, err
			}
			subs = append(subs, c)
		}
		return func(x any) bool {
			for _, s := range subs {
				if s(x) {
					return true
				}
			}
			return false
		}, nil
	default:
		return nil, fmt.Errorf("unsupported value matcher %T", p)
	}
}

func matchScalarOrList(x any, sm matcher.String) bool {
	switch v := x.(type) {
	case string:
		return sm.Match(v)
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && sm.Match(s) {
				return true
			}
		}
	}
	return false
}
