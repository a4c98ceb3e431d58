package kubesource

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Istio's fake clientset does not declare that it lacks watch-list
	// support, and its informers may then never sync. The real API server
	// tests are unaffected by turning the client feature off.
	if err := os.Setenv("KUBE_FEATURE_WatchListClient", "false"); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}
