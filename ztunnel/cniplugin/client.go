package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// ErrAgentUnreachable is wrapped by calls that never got an answer from
// the node agent (socket missing, connection refused or reset).
var ErrAgentUnreachable = errors.New("zmesh node agent unreachable")

// AgentError is a non-2xx answer from the node agent.
type AgentError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the agent's explanation.
	Message string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("node agent answered %d: %s", e.Status, e.Message)
}

// agentClient talks HTTP to the node agent over its unix socket.
type agentClient struct {
	socket string
	http   *http.Client
}

func newAgentClient(socket string) *agentClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &agentClient{socket: socket, http: &http.Client{Transport: tr}}
}

// call POSTs req to path and decodes the answer. Transport failures wrap
// ErrAgentUnreachable; a non-2xx status is an *AgentError.
func (c *agentClient) call(ctx context.Context, path string, req *PodRequest) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	// The host is ignored: the transport always dials the socket.
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://zmesh-node-agent"+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrAgentUnreachable, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: reading the answer: %w", ErrAgentUnreachable, c.socket, err)
	}
	var out Response
	if err := json.Unmarshal(data, &out); err != nil {
		out.Error = string(bytes.TrimSpace(data))
	}
	if resp.StatusCode/100 != 2 {
		msg := out.Error
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return nil, &AgentError{Status: resp.StatusCode, Message: msg}
	}
	return &out, nil
}
