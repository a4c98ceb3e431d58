package nodeagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewDaemonValidates(t *testing.T) {
	for _, cfg := range []DaemonConfig{
		{ConfigDir: "/x"},
		{NodeName: "n"},
	} {
		if _, err := NewDaemon(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestRunStopsCleanly runs the daemon until its context ends and checks
// that it released its sockets.
func TestRunStopsCleanly(t *testing.T) {
	run := t.TempDir()
	cfg := DaemonConfig{
		NodeName: "n1", ConfigDir: t.TempDir(),
		ZDSSocket: filepath.Join(run, "ztunnel.sock"), CNISocket: filepath.Join(run, "cni.sock"),
		ReadyAddr: "127.0.0.1:0",
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg) }()
	eventually(t, "sockets", func() bool {
		_, err1 := os.Stat(cfg.ZDSSocket)
		_, err2 := os.Stat(cfg.CNISocket)
		return err1 == nil && err2 == nil
	})
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	for _, p := range []string{cfg.ZDSSocket, cfg.CNISocket} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	// A start that fails (missing manifest directory) stops what it began.
	cfg.ConfigDir = filepath.Join(run, "missing")
	if err := Run(context.Background(), cfg); err == nil {
		t.Fatal("Run with a missing directory succeeded")
	}
	if _, err := os.Stat(cfg.ZDSSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed start left the ZDS socket: %v", err)
	}
}
