//go:build !linux

package timerslack

import "time"

// Current reports no slack: timer slack is a Linux notion.
func Current() (time.Duration, error) { return 0, nil }

// Ensure does nothing: timer slack is a Linux notion.
func Ensure(time.Duration) error { return nil }
