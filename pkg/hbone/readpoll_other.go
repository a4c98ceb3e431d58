//go:build !linux

package hbone

import "errors"

// readPoller exists only on Linux; elsewhere SpliceAsync waits for TCP
// reads with a goroutine per direction, as Splice does.
type readPoller struct{}

func sharedPoller() (*readPoller, error) { return nil, errors.ErrUnsupported }

func (*readPoller) arm(int, *tcpSource) error { return errors.ErrUnsupported }

func (*readPoller) forget(*tcpSource) {}

func (*readPoller) heat(*tcpSource) {}

func (*readPoller) unheat(*tcpSource) {}
