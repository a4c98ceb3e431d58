// Package log builds the slog loggers of zmesh's commands.
package log

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a text logger writing to w at level ("debug", "info", "warn"
// or "error").
func New(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
