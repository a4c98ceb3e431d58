package interop

import (
	"encoding/json"
	"reflect"
	"testing"
)

// jsonEqual compares two JSON documents by value: protojson's spacing is
// deliberately unstable, so bytes cannot be compared.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("bad json %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("bad json %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
