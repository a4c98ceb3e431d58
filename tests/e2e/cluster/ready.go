package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// WaitReady polls url (a /healthz/ready endpoint) with client until it
// answers 200 or ctx ends; the error then carries the last answer.
func WaitReady(ctx context.Context, client *http.Client, url string) error {
	var last error
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
