package e2e

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// echoEnv makes the test binary act as the echo app inside pods, so the
// tests need no separate build step.
const echoEnv = "ZMESH_E2E_RUN_ECHO"

func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := echo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func echoEnvVars() []string {
	return []string{echoEnv + "=1", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}
