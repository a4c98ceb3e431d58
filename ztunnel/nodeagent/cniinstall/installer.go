package cniinstall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Config configures an Installer.
type Config struct {
	// BinDir receives the plugin binary; "" skips installing it.
	BinDir string
	// PluginBinary is the zmesh-cni executable to copy. Required with
	// BinDir.
	PluginBinary string
	// NetDir holds the runtime's network configurations; "" leaves them
	// alone.
	NetDir string
	// Plugin is the chain entry; "type" is set to PluginType.
	Plugin map[string]any
	// UninstallOnExit removes the chain entry on Stop (the binary stays:
	// a pod sandbox being torn down may still run it).
	UninstallOnExit bool
	// Resync is how often the files are checked without an event (default
	// 30s).
	Resync time.Duration
	// Debounce is the quiet period after a file event (default 100ms).
	Debounce time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Installer installs the plugin and keeps it installed. Start, then Stop.
type Installer struct {
	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// New validates cfg.
func New(cfg Config) (*Installer, error) {
	if cfg.BinDir != "" && cfg.PluginBinary == "" {
		return nil, errors.New("cniinstall: the plugin binary to install is required")
	}
	if cfg.Resync < 0 || cfg.Debounce < 0 {
		return nil, errors.New("cniinstall: negative interval")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	plugin := map[string]any{}
	for k, v := range cfg.Plugin {
		plugin[k] = v
	}
	plugin["type"] = PluginType
	cfg.Plugin = plugin
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Installer{cfg: cfg, log: log.With("component", "cni-install", "bin_dir", cfg.BinDir, "net_dir", cfg.NetDir)}, nil
}

// Start installs the binary (failing if it cannot), adds the plugin to the
// chain if a configuration exists (waiting for one otherwise), and watches
// the net directory to keep it there.
func (i *Installer) Start() error {
	if i.cfg.BinDir != "" {
		wrote, err := InstallBinary(i.cfg.PluginBinary, i.cfg.BinDir)
		if err != nil {
			return err
		}
		i.log.Info("CNI plugin binary in place", "updated", wrote)
	}
	if i.cfg.NetDir == "" {
		return nil
	}
	if err := os.MkdirAll(i.cfg.NetDir, 0o755); err != nil {
		return fmt.Errorf("cniinstall: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cniinstall: watch: %w", err)
	}
	if err := w.Add(i.cfg.NetDir); err != nil {
		_ = w.Close()
		return fmt.Errorf("cniinstall: watch %s: %w", i.cfg.NetDir, err)
	}
	i.ensure()
	ctx, cancel := context.WithCancel(context.Background())
	i.cancel, i.done = cancel, make(chan struct{})
	go i.watch(ctx, w)
	return nil
}

// Stop ends watching and, with UninstallOnExit, removes the plugin from the
// chain.
func (i *Installer) Stop() {
	if i.cancel != nil {
		i.cancel()
		<-i.done
		i.cancel = nil
	}
	if i.cfg.NetDir != "" && i.cfg.UninstallOnExit {
		path, changed, err := RemoveFromChain(i.cfg.NetDir)
		if err != nil {
			i.log.Error("CNI plugin not removed from the chain", "err", err)
			return
		}
		i.log.Info("CNI plugin removed from the chain", "file", path, "changed", changed)
	}
}

// ensure adds the plugin to the chain, logging the outcome.
func (i *Installer) ensure() {
	path, changed, err := EnsureChain(i.cfg.NetDir, i.cfg.Plugin)
	switch {
	case errors.Is(err, ErrNoPrimaryConfig):
		i.log.Info("waiting for the primary CNI network configuration")
	case err != nil:
		i.log.Error("CNI plugin not added to the chain", "file", path, "err", err)
	case changed:
		i.log.Info("CNI plugin added to the chain", "file", path)
	}
}

func (i *Installer) watch(ctx context.Context, w *fsnotify.Watcher) {
	defer close(i.done)
	defer func() { _ = w.Close() }()
	resync := time.NewTicker(i.cfg.Resync)
	defer resync.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			i.log.Debug("CNI directory changed", "event", ev.String())
			debounce = time.After(i.cfg.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			i.log.Warn("CNI directory watch error", "err", err)
		case <-debounce:
			debounce = nil
			i.ensure()
		case <-resync.C:
			if i.cfg.BinDir != "" {
				if wrote, err := InstallBinary(i.cfg.PluginBinary, i.cfg.BinDir); err != nil {
					i.log.Error("CNI plugin binary not reinstalled", "err", err)
				} else if wrote {
					i.log.Info("CNI plugin binary reinstalled")
				}
			}
			i.ensure()
		}
	}
}
