package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// pingGap separates the idle round trips: long enough for the path's
// processes to go to sleep in between.
const pingGap = time.Millisecond

// pingRTT measures the machine's floor under every latency figure: n
// 1-byte round trips to the path's TCP echo server over one connection,
// gap apart, so that every process on the path has gone to sleep before
// each ping and must be woken, once per direction, to pass it on. The
// direct path wakes two processes (server, then client); each proxy on a
// path adds two wake-ups per round trip, which is what a proxy costs here
// before any work of its own.
func pingRTT(ctx context.Context, p *Path, n int, gap time.Duration) (Latency, error) {
	if n <= 0 {
		return Latency{}, fmt.Errorf("1-byte round trips over %s: count %d", p.Name, n)
	}
	var rtts []time.Duration
	err := p.Client.Netns.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", p.Echo)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(time.Duration(n)*(gap+5*time.Millisecond) + 5*time.Second)); err != nil {
			return err
		}
		buf := []byte{'x'}
		for range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(gap)
			start := time.Now()
			if _, err := c.Write(buf); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			rtts = append(rtts, time.Since(start))
		}
		return nil
	})
	if err != nil {
		return Latency{}, fmt.Errorf("1-byte round trips over %s: %w", p.Name, err)
	}
	slices.Sort(rtts)
	at := func(q int) time.Duration { return rtts[(len(rtts)-1)*q/100] }
	return Latency{P50: at(50), P90: at(90), P99: at(99), Requests: int64(len(rtts))}, nil
}
