package echo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Exit codes of Main.
const (
	ExitOK    = 0
	ExitError = 1 // a server failed, or a client request failed in transport
	ExitUsage = 2
)

// Main runs the echo command line and returns its exit code:
//
//	echo [serve] [--pod NAME] [--namespace NS] [--http PORTS] [--tcp PORTS]
//	             [--grpc PORTS] [--proxy-protocol PORTS] [--listen-ip IP] [--log-level LEVEL]
//	echo client --url URL [--header 'Name: value']... [--json] [--count N] [--timeout D]
//	echo client --tcp HOST:PORT --send DATA [--timeout D]
//
// PORTS are comma-separated. serve runs until ctx ends. An HTTP client
// prints "status=<code>" then the body for each request (any status
// exits 0); a TCP client prints exactly the bytes it got back.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serveMain(ctx, args, stderr)
	case "client":
		return clientMain(ctx, args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "echo: unknown command %q (want serve or client)\n", cmd)
		return ExitUsage
	}
}

func serveMain(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("echo serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	pod := fs.String("pod", envOr("POD_NAME", host), "pod name to report")
	namespace := fs.String("namespace", envOr("POD_NAMESPACE", "default"), "namespace to report")
	httpPorts := fs.String("http", "8080", "comma-separated HTTP ports")
	tcpPorts := fs.String("tcp", "9000", "comma-separated TCP echo ports")
	grpcPorts := fs.String("grpc", "", "comma-separated gRPC ports")
	ppPorts := fs.String("proxy-protocol", "", "comma-separated ports that require a PROXY v2 header (identity from TLV 0xD0)")
	listenIP := fs.String("listen-ip", "", "address to listen on (default all)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "echo: --log-level: %v\n", err)
		return ExitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("pod", *pod)
	hp, err1 := parsePorts(*httpPorts)
	tp, err2 := parsePorts(*tcpPorts)
	pp, err3 := parsePorts(*ppPorts)
	gp, err4 := parsePorts(*grpcPorts)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return ExitUsage
	}
	proxied := make(map[int]bool, len(pp))
	for _, p := range pp {
		proxied[p] = true
	}
	var lcs []ListenerConfig
	for _, p := range hp {
		lcs = append(lcs, ListenerConfig{Protocol: HTTP, Port: p, ProxyProtocol: proxied[p]})
		delete(proxied, p)
	}
	for _, p := range tp {
		lcs = append(lcs, ListenerConfig{Protocol: TCP, Port: p, ProxyProtocol: proxied[p]})
		delete(proxied, p)
	}
	for _, p := range gp {
		lcs = append(lcs, ListenerConfig{Protocol: GRPC, Port: p})
	}
	for p := range proxied {
		fmt.Fprintf(stderr, "echo: --proxy-protocol port %d is not an --http or --tcp port\n", p)
		return ExitUsage
	}
	srv, err := NewServer(Config{Pod: *pod, Namespace: *namespace, Listeners: lcs, ListenIP: *listenIP, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return ExitUsage
	}
	if err := srv.Start(); err != nil {
		log.Error("echo: start", "err", err)
		return ExitError
	}
	log.Info("echo: ready")
	<-ctx.Done()
	log.Info("echo: shutting down")
	if err := srv.Close(); err != nil {
		log.Error("echo: close", "err", err)
		return ExitError
	}
	return ExitOK
}

// headerList collects repeated --header flags.
type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, "; ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func clientMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echo client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "HTTP URL to GET")
	tcpAddr := fs.String("tcp", "", "TCP echo address host:port")
	send := fs.String("send", "", "bytes to send with --tcp")
	asJSON := fs.Bool("json", false, "ask the server for JSON")
	count := fs.Int("count", 1, "number of HTTP requests (one connection each)")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout per request")
	var headers headerList
	fs.Var(&headers, "header", "request header 'Name: value' (repeatable; Host sets the Host)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if (*url == "") == (*tcpAddr == "") {
		fmt.Fprintln(stderr, "echo client: give exactly one of --url and --tcp")
		return ExitUsage
	}
	if *tcpAddr != "" {
		rctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		got, err := TCPRoundTrip(rctx, nil, *tcpAddr, []byte(*send))
		_, _ = stdout.Write(got)
		if err != nil {
			fmt.Fprintf(stderr, "echo client: %v\n", err)
			return ExitError
		}
		return ExitOK
	}
	h := make(http.Header)
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			fmt.Fprintf(stderr, "echo client: --header %q: want 'Name: value'\n", kv)
			return ExitUsage
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if *asJSON {
		h.Set("Accept", "application/json")
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	for range max(*count, 1) {
		resp, err := Get(ctx, client, *url, h)
		if err != nil {
			fmt.Fprintf(stderr, "echo client: %v\n", err)
			return ExitError
		}
		fmt.Fprintf(stdout, "status=%d\n", resp.Status)
		_, _ = stdout.Write(resp.Body)
	}
	return ExitOK
}

func parsePorts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("bad port %q", f)
		}
		out = append(out, p)
	}
	return out, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
