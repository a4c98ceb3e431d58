package echo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// maxBody bounds the response body the client reads.
const maxBody = 1 << 20

// Response is one HTTP exchange's result.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Report is the parsed body, nil when the body is not a report (an
	// error page from a proxy, say).
	Report *Report
}

// Get sends one GET for url with client and the extra headers (a "Host"
// entry sets the request's Host). Any HTTP status is a Response, not an
// error; errors are transport failures.
func Get(ctx context.Context, client *http.Client, url string, header http.Header) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("echo: request %s: %w", url, err)
	}
	for k, vs := range header {
		if http.CanonicalHeaderKey(k) == "Host" && len(vs) > 0 {
			req.Host = vs[0]
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("echo: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("echo: GET %s: read body: %w", url, err)
	}
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if rep, err := ParseReport(body); err == nil {
		out.Report = rep
	}
	return out, nil
}

// DialFunc opens a connection (net.Dialer.DialContext or a namespace's).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// TCPRoundTrip connects to addr, writes payload, closes its sending side
// and returns everything received until the server closes (or ctx ends).
func TCPRoundTrip(ctx context.Context, dial DialFunc, addr string, payload []byte) ([]byte, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo: dial %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(io.LimitReader(c, maxBody))
	werr := <-errc
	if err := errors.Join(werr, rerr); err != nil {
		return got, fmt.Errorf("echo: tcp round trip to %s: %w", addr, err)
	}
	return got, nil
}
