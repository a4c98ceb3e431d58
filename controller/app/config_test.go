package app

import (
	"slices"
	"testing"
)

// TestWaypointArgs: the tracing and access log settings reach every
// deployed waypoint's command line, and an impossible sampling rate or
// access log path is refused.
func TestWaypointArgs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint string
		sampling float64
		logFile  string
		want     []string
		wantErr  bool
	}{
		{name: "no tracing", want: nil},
		{name: "sampling alone does nothing", sampling: 5, want: nil},
		{name: "endpoint", endpoint: "http://c:4318/v1/traces", want: []string{"--otlp-endpoint=http://c:4318/v1/traces"}},
		{name: "endpoint and sampling", endpoint: "http://c:4318/v1/traces", sampling: 12.5,
			want: []string{"--otlp-endpoint=http://c:4318/v1/traces", "--trace-sampling=12.5"}},
		{name: "sampling over 100", endpoint: "http://c", sampling: 101, wantErr: true},
		{name: "negative sampling", endpoint: "http://c", sampling: -1, wantErr: true},
		{name: "access log", logFile: "/dev/stdout", want: []string{"--access-log-file=/dev/stdout"}},
		{name: "tracing and access log", endpoint: "http://c", logFile: "/var/log/access.json",
			want: []string{"--otlp-endpoint=http://c", "--access-log-file=/var/log/access.json"}},
		{name: "relative access log path", logFile: "access.log", wantErr: true},
		{name: "access log path with a newline", logFile: "/dev/stdout\n--admin-addr=:1", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := KubeConfig{SystemNamespace: "istio-system", Identity: "a", WaypointImage: "w",
				WaypointOTLPEndpoint: tc.endpoint, WaypointTraceSampling: tc.sampling, WaypointAccessLogFile: tc.logFile}.withDefaults()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			a := &App{cfg: Config{Kube: k}}
			if got := a.waypointArgs(); !slices.Equal(got, tc.want) {
				t.Errorf("args %q, want %q", got, tc.want)
			}
		})
	}
}
