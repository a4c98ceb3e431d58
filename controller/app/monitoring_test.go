package app

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDebugEndpointsAreLocalOnly: the config dump (every workload and
// policy) answers loopback callers only.
func TestDebugEndpointsAreLocalOnly(t *testing.T) {
	h := localOnly(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("dump")) })
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"127.0.0.1:40000", http.StatusOK},
		{"[::1]:40000", http.StatusOK},
		{"[::ffff:127.0.0.1]:40000", http.StatusOK},
		{"10.244.0.7:40000", http.StatusForbidden},
		{"[fd00::7]:40000", http.StatusForbidden},
		{"garbage", http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodGet, "/debug/config_dump", nil)
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		h(w, r)
		if w.Code != tc.want {
			t.Errorf("from %s: %d, want %d", tc.remote, w.Code, tc.want)
		}
	}
}
