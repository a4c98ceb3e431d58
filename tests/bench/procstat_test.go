package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMachineBusy(t *testing.T) {
	busy, err := machineBusy(context.Background(), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if busy < 0 || busy > 1 {
		t.Errorf("busy share %v, want it within [0, 1]", busy)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := machineBusy(ctx, time.Hour); err == nil {
		t.Error("machineBusy ignored a cancelled context")
	}
}

func TestRunningNeighbours(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	// A process whose name starts like etcd's.
	bin := filepath.Join(t.TempDir(), "etcd-lookalike")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if got := runningNeighbours(); !slices.Contains(got, "etcd") {
		t.Errorf("runningNeighbours() = %v, want etcd among them", got)
	}
}

func TestNoisyMachineIsNotAProblem(t *testing.T) {
	var out bytes.Buffer
	printErrors(&out, &Results{Noisy: []string{"etcd running"}})
	if s := out.String(); !strings.Contains(s, "not a quiet machine") || !strings.Contains(s, "etcd running") || strings.Contains(s, "problems:") {
		t.Errorf("report:\n%s", s)
	}
}
