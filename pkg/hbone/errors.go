package hbone

import (
	"errors"
	"fmt"
	"net/http"
)

// StatusError is returned by Pool.Dial when the server answered the CONNECT
// with a status other than 200. Use errors.As to get at the code.
type StatusError struct {
	// Code is the HTTP status the server sent, e.g. 400, 401 or 503.
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: CONNECT rejected with status %d %s", e.Code, http.StatusText(e.Code))
}

// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("hbone: server closed")

// ErrPoolClosed is returned by Pool.Dial after Pool.Close.
var ErrPoolClosed = errors.New("hbone: pool closed")

// ErrStreamReset is returned by stream reads and writes after the peer reset
// the stream or the connection carrying it failed.
var ErrStreamReset = errors.New("hbone: stream reset")
