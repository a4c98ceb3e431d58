package configdir

import "testing"

// FuzzDecodeAll feeds arbitrary bytes to the manifest decoder: it must
// return objects or an error, never panic.
func FuzzDecodeAll(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"action":"DENY"}}`))
	d := newDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, _, err := d.decodeAll(data)
		if err == nil {
			for _, o := range objs {
				if o == nil {
					t.Fatal("nil object without error")
				}
			}
		}
	})
}
