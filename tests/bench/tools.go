package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// Pinned tool versions. fortio and ghostunnel are installed as tools under
// the tools directory (keyed by version, like the Makefile's tools), never
// imported into the main module.
const (
	fortioVersion     = "v1.66.0"
	ghostunnelVersion = "v1.8.4"
	ghostunnelModule  = "github.com/ghostunnel/ghostunnel"
)

// Tools are the paths of the external programs the bench drives.
type Tools struct {
	Iperf3 string
	Fortio string
	// Ghostunnel is empty when it could not be built; GhostunnelErr says
	// why.
	Ghostunnel    string
	GhostunnelErr error
	// NginxStream is nginx with its stream module, for the nginx mTLS
	// reference; empty when unavailable, and NginxStreamErr says why.
	NginxStream    string
	NginxStreamErr error
}

// defaultToolsDir is ~/.cache/zmesh-tools, shared with the Makefile.
func defaultToolsDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "zmesh-tools")
	}
	return filepath.Join(home, ".cache", "zmesh-tools")
}

// ensureIperf3 returns iperf3's path, installing the Debian package when it
// is missing.
func ensureIperf3(ctx context.Context, log *slog.Logger) (string, error) {
	if p, err := exec.LookPath("iperf3"); err == nil {
		return p, nil
	}
	log.Info("installing iperf3 with apt-get")
	if err := aptInstall(ctx, "iperf3"); err != nil {
		return "", err
	}
	p, err := exec.LookPath("iperf3")
	if err != nil {
		return "", fmt.Errorf("iperf3 installed but not found: %w", err)
	}
	return p, nil
}

// aptInstall installs Debian packages, running apt-get update only when
// the first attempt fails. RUNLEVEL=1 keeps the packages' scripts from
// starting system services (nginx's).
func aptInstall(ctx context.Context, pkgs ...string) error {
	env := []string{"RUNLEVEL=1", "DEBIAN_FRONTEND=noninteractive"}
	install := func() error {
		return runQuiet(ctx, env, "", "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
	}
	if err := install(); err != nil {
		if uerr := runQuiet(ctx, env, "", "apt-get", "update"); uerr != nil {
			return fmt.Errorf("install %s: %w (apt-get update: %w)", strings.Join(pkgs, " "), err, uerr)
		}
		if err := install(); err != nil {
			return fmt.Errorf("install %s: %w", strings.Join(pkgs, " "), err)
		}
	}
	return nil
}

// ensureFortio returns fortio's path under dir, installing it with
// `go install` when missing.
func ensureFortio(ctx context.Context, dir string, log *slog.Logger) (string, error) {
	link := filepath.Join(dir, "fortio-"+fortioVersion)
	if isExecutable(link) {
		return link, nil
	}
	bin := filepath.Join(dir, "bin-fortio-"+fortioVersion)
	if !isExecutable(filepath.Join(bin, "fortio")) {
		log.Info("installing fortio", "version", fortioVersion, "dir", bin)
		env := []string{"GOBIN=" + bin, "GOFLAGS="}
		if err := runQuiet(ctx, env, "", goTool(), "install", "fortio.org/fortio@"+fortioVersion); err != nil {
			return "", fmt.Errorf("install fortio %s: %w", fortioVersion, err)
		}
	}
	if err := relink(filepath.Join(bin, "fortio"), link); err != nil {
		return "", err
	}
	return link, nil
}

// ensureGhostunnel returns ghostunnel's path under dir, building it when
// missing. `go install` does not work for it here, so it is built from a
// scratch module that requires the pinned version and borrows upstream's
// go.sum.
func ensureGhostunnel(ctx context.Context, dir string, log *slog.Logger) (string, error) {
	link := filepath.Join(dir, "ghostunnel-"+ghostunnelVersion)
	if isExecutable(link) {
		return link, nil
	}
	bin := filepath.Join(dir, "bin-ghostunnel-"+ghostunnelVersion)
	if !isExecutable(filepath.Join(bin, "ghostunnel")) {
		log.Info("building ghostunnel from a scratch module (once)", "version", ghostunnelVersion, "dir", bin)
		if err := buildGhostunnel(ctx, filepath.Join(bin, "ghostunnel")); err != nil {
			return "", err
		}
	}
	if err := relink(filepath.Join(bin, "ghostunnel"), link); err != nil {
		return "", err
	}
	return link, nil
}

func buildGhostunnel(ctx context.Context, out string) error {
	scratch, err := os.MkdirTemp("", "zmesh-ghostunnel-")
	if err != nil {
		return fmt.Errorf("ghostunnel scratch module: %w", err)
	}
	defer os.RemoveAll(scratch)
	gomod := fmt.Sprintf("module zmesh.local/ghostunnel-tool\n\ngo 1.23\n\nrequire %s %s\n", ghostunnelModule, ghostunnelVersion)
	if err := os.WriteFile(filepath.Join(scratch, "go.mod"), []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("ghostunnel scratch module: %w", err)
	}
	env := []string{"GOFLAGS="}
	cmd := exec.CommandContext(ctx, goTool(), "mod", "download", "-json", ghostunnelModule+"@"+ghostunnelVersion)
	cmd.Dir, cmd.Env = scratch, append(os.Environ(), env...)
	js, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("download ghostunnel %s: %w", ghostunnelVersion, exitDetail(err))
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(js, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("download ghostunnel %s: no module directory in %q: %w", ghostunnelVersion, js, err)
	}
	sum, err := os.ReadFile(filepath.Join(mod.Dir, "go.sum"))
	if err != nil {
		return fmt.Errorf("ghostunnel go.sum: %w", err)
	}
	if err := os.WriteFile(filepath.Join(scratch, "go.sum"), sum, 0o644); err != nil {
		return fmt.Errorf("ghostunnel scratch module: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("ghostunnel: %w", err)
	}
	if err := runQuiet(ctx, env, scratch, goTool(), "build", "-mod=mod", "-o", out, ghostunnelModule); err != nil {
		return fmt.Errorf("build ghostunnel %s: %w", ghostunnelVersion, err)
	}
	return nil
}

// goTool is the go command (GO from the Makefile, else go on PATH).
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// relink points link at target (atomically, replacing a stale link).
func relink(target, link string) error {
	tmp := fmt.Sprintf("%s.tmp%d", link, os.Getpid())
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

// runQuiet runs a command in the root namespace and returns its output in
// the error when it fails.
func runQuiet(ctx context.Context, env []string, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, cluster.LastLines(string(out), 5))
	}
	return nil
}

// exitDetail adds a failed command's stderr to its error.
func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, cluster.LastLines(string(ee.Stderr), 5))
	}
	return err
}

// ensureTools finds or installs every tool. iperf3 and fortio are required;
// ghostunnel and nginx's stream module are optional (their comparison rows
// are skipped without them).
func ensureTools(ctx context.Context, dir string, withGhostunnel, withNginx bool, log *slog.Logger) (Tools, error) {
	var t Tools
	var err error
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return t, fmt.Errorf("tools dir: %w", err)
	}
	ictx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if t.Iperf3, err = ensureIperf3(ictx, log); err != nil {
		return t, err
	}
	if t.Fortio, err = ensureFortio(ictx, dir, log); err != nil {
		return t, err
	}
	t.NginxStreamErr = errors.New("disabled")
	if withNginx {
		nctx, ncancel := context.WithTimeout(ctx, 3*time.Minute)
		defer ncancel()
		if t.NginxStream, t.NginxStreamErr = ensureNginxStream(nctx); t.NginxStreamErr != nil {
			log.Warn("nginx's stream module unavailable; the nginx mTLS references are skipped", "err", t.NginxStreamErr)
		}
	}
	t.GhostunnelErr = errors.New("disabled")
	if withGhostunnel {
		gctx, gcancel := context.WithTimeout(ctx, 4*time.Minute)
		defer gcancel()
		if t.Ghostunnel, t.GhostunnelErr = ensureGhostunnel(gctx, dir, log); t.GhostunnelErr != nil {
			log.Warn("ghostunnel unavailable; its comparison rows are skipped", "err", t.GhostunnelErr)
		}
	}
	return t, nil
}
