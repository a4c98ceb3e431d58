package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// testCurl sends requests of the shapes a Go client never makes through
// the waypoint with curl from pod src: HTTP/1.0, HEAD, a chunked upload
// and an upload that waits for "100 Continue". Each must reach the app
// and come back whole.
func testCurl(t *testing.T, src *cluster.Pod, vipURL string) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (make packages installs it)")
	}
	// The scenario before may have just removed its routes: wait until
	// the default route serves again.
	waitFor(t, "the default route serves /curl/", func() (bool, string) {
		r, err := request(src, http.MethodGet, vipURL+"/curl/probe", nil)
		return err == nil && r.Status == http.StatusOK, describe(r, err)
	})
	big := strings.Repeat("z", 256<<10)
	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		method string // in the app's report; "" when the answer has no body
		want   string // in curl's verbose output (the status lines)
	}{
		{"http/1.0", []string{"-0", vipURL + "/curl/10"}, "", "GET", " 200 OK"},
		{"head", []string{"-I", vipURL + "/curl/head"}, "", "", " 200 OK"},
		{"chunked upload", []string{"-H", "Transfer-Encoding: chunked", "--data-binary", "@-", vipURL + "/curl/chunked"}, big, "POST", " 200 OK"},
		{"expect 100-continue", []string{"-H", "Expect: 100-continue", "--data-binary", "@-", vipURL + "/curl/expect"}, big, "POST", " 100 Continue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"netns", "exec", src.Netns.Name, "curl", "-sS", "-v", "--max-time", "10"}, tc.args...)
			cmd := exec.CommandContext(ctx, "ip", args...)
			cmd.Stdin = strings.NewReader(tc.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("curl: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("curl output lacks %q:\n%s", tc.want, stderr.String())
			}
			if tc.method == "" {
				return
			}
			rep, err := echo.ParseReport(stdout.Bytes())
			if err != nil {
				t.Fatalf("app answer %q: %v", stdout.String(), err)
			}
			if rep.Method != tc.method || !strings.HasPrefix(rep.Path, "/curl/") {
				t.Errorf("app saw %s %s, want %s /curl/...", rep.Method, rep.Path, tc.method)
			}
		})
	}
}
