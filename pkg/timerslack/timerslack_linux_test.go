package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary run child instead of the tests.
const childEnv = "TIMERSLACK_TEST_CHILD"

const testSlack = 1500 * time.Microsecond

// pathChildEnv makes the test binary print selfPath before and after it
// deletes its own file.
const pathChildEnv = "TIMERSLACK_TEST_PATH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		child()
		return
	}
	if os.Getenv(pathChildEnv) != "" {
		fmt.Println(selfPath())
		if err := os.Remove(os.Args[0]); err != nil {
			fmt.Println("error:", err)
		}
		fmt.Println(selfPath())
		return
	}
	os.Exit(m.Run())
}

// child prints one "image" line per program image it runs in, calls Ensure,
// and prints the slack that several threads of the final image have.
func child() {
	fmt.Println("image")
	if err := Ensure(testSlack); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	var wg sync.WaitGroup
	slacks := make([]time.Duration, 4)
	for i := range slacks {
		wg.Go(func() {
			// Lock without unlocking, so that each goroutine ends with
			// its own thread and the next needs a new one.
			runtime.LockOSThread()
			d, err := current()
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			slacks[i] = d
		})
		wg.Wait()
	}
	fmt.Println("slack", slacks)
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Print("comm ", string(comm))
	os.Exit(0)
}

func runChild(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return string(out)
}

func TestEnsureExecsOnceKeepsTheNameAndEveryThreadHasTheSlack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("timer slack is a Linux notion")
	}
	// The kernel names a process after the file it executes, cut to 15
	// bytes: the new image keeps the test binary's name.
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15]
	}
	want := fmt.Sprintf("image\nimage\nslack %v\ncomm %s\n", []time.Duration{testSlack, testSlack, testSlack, testSlack}, name)
	if got := runChild(t); got != want {
		t.Errorf("child printed\n%s\nwant\n%s", got, want)
	}
}

func TestEnsureDoesNotExecWhenTheSlackIsInherited(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("timer slack is a Linux notion")
	}
	// A child inherits the slack of the thread that starts it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := current()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(testSlack), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	out := runChild(t)
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "image\n"); n != 1 {
		t.Errorf("child ran %d images, want 1:\n%s", n, out)
	}
}

func TestEnsureArguments(t *testing.T) {
	if err := Ensure(0); err != nil {
		t.Errorf("Ensure(0) = %v, want nil (keep the inherited slack)", err)
	}
	if err := Ensure(-time.Millisecond); err == nil {
		t.Error("Ensure(-1ms) = nil, want an error")
	}
}

func TestSelfPathFallsBackWhenTheBinaryIsGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("timer slack is a Linux notion")
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "copy.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), pathChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if want := bin + "\n" + selfExe + "\n"; string(out) != want {
		t.Errorf("child printed\n%s\nwant\n%s", out, want)
	}
}
