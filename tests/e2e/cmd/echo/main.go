// Command echo is the application every simulated pod runs: an HTTP server
// reporting who served a request and whom it saw (including the peer's
// SPIFFE identity from a PROXY v2 header), a TCP echo server, and a client
// for both. See package github.com/zmesh/zmesh/tests/e2e/echo.
//
// Usage:
//
//	echo [serve] [--pod NAME] [--namespace NS] [--http 8080] [--tcp 9000] [--proxy-protocol PORTS]
//	echo client --url http://10.244.2.2:8080/ [--header 'Host: x'] [--json] [--count N]
//	echo client --tcp 10.244.2.2:9000 --send hello
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/zmesh/zmesh/tests/e2e/echo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := echo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
