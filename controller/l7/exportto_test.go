package l7

import "testing"

func TestExportedTo(t *testing.T) {
	for _, tc := range []struct {
		exportTo []string
		ns, to   string
		want     bool
	}{
		{nil, "a", "b", true},
		{[]string{"*"}, "a", "b", true},
		{[]string{"."}, "a", "a", true},
		{[]string{"."}, "a", "b", false},
		{[]string{"~"}, "a", "a", false},
		{[]string{"b"}, "a", "b", true},
		{[]string{"c", "."}, "a", "b", false},
		{[]string{"c", "b"}, "a", "b", true},
	} {
		if got := exportedTo(tc.exportTo, tc.ns, tc.to); got != tc.want {
			t.Errorf("exportedTo(%q, %q, %q) = %v, want %v", tc.exportTo, tc.ns, tc.to, got, tc.want)
		}
	}
}
