//go:build !linux

package timerslack

import "time"

// Ensure does nothing: timer slack is a Linux notion.
func Ensure(time.Duration) error { return nil }
