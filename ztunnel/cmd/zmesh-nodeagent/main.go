// Command zmesh-nodeagent runs ztunnel's node agent: it decides which pods
// on its node are in the ambient mesh, redirects their traffic and hands
// them to ztunnel. See ztunnel/nodeagent.
//
// With --config-dir it reads pods and namespaces from the controller's
// manifest directory (local mode); without, it watches the Kubernetes API
// (--kubeconfig, else $KUBECONFIG, else the in-cluster service account).
// On Kubernetes it also installs the zmesh-cni plugin (--cni-bin-dir,
// --cni-net-dir); in local mode only when those flags are given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/log"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
	"github.com/zmesh/zmesh/ztunnel/nodeagent/cniinstall"
	"github.com/zmesh/zmesh/ztunnel/nodeagent/kubesource"
)

// options are the command line beyond DaemonConfig.
type options struct {
	kubeconfig      string
	netnsSearch     bool
	procDir         string
	netnsDirs       string
	cniBinDir       string
	cniBinary       string
	cniNetDir       string
	cniUninstall    bool
	cniPluginSocket string
	logLevel        string
}

func main() {
	cfg, o, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zmesh-nodeagent:", err)
		os.Exit(2)
	}
	logger, err := log.New(os.Stderr, o.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zmesh-nodeagent:", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	if err := run(cfg, o, logger); err != nil {
		fmt.Fprintln(os.Stderr, "zmesh-nodeagent:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line. In local mode (--config-dir) the CNI
// install directories apply only when given explicitly; in Kubernetes mode
// the node name is required.
func parseFlags(args []string, getenv func(string) string) (nodeagent.DaemonConfig, options, error) {
	var cfg nodeagent.DaemonConfig
	var o options
	fs := flag.NewFlagSet("zmesh-nodeagent", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeName, "node-name", getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&cfg.ConfigDir, "config-dir", "", "the controller's manifest directory (local mode pod source); empty: watch the Kubernetes API")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (Kubernetes mode); empty: $KUBECONFIG, else in-cluster")
	fs.StringVar(&cfg.ZDSSocket, "zds-socket", "/var/run/ztunnel/ztunnel.sock", "ZDS socket ztunnel connects to")
	fs.StringVar(&cfg.CNISocket, "cni-socket", "/var/run/ztunnel/cni.sock", "socket the CNI plugin calls")
	fs.StringVar(&cfg.ReadyAddr, "ready-addr", nodeagent.DefaultReadyAddr, "readiness address (/healthz/ready)")
	fs.StringVar(&cfg.StateDir, "state-dir", nodeagent.DefaultStateDir, "where pods' network namespace paths are kept across restarts; empty disables")
	fs.BoolVar(&o.netnsSearch, "netns-search", true, "after a restart, search the host's network namespaces for pods without a usable state record")
	fs.StringVar(&o.procDir, "proc-dir", "/proc", "the host's /proc for --netns-search (needs hostPID); empty skips processes")
	fs.StringVar(&o.netnsDirs, "netns-dirs", "/var/run/netns", "comma-separated directories of named network namespaces for --netns-search")
	fs.StringVar(&o.cniBinDir, "cni-bin-dir", "/host/opt/cni/bin", "where to install the zmesh-cni binary; empty disables")
	fs.StringVar(&o.cniBinary, "cni-plugin-binary", "", "the zmesh-cni binary to install (default: zmesh-cni next to this executable)")
	fs.StringVar(&o.cniNetDir, "cni-net-dir", "/host/etc/cni/net.d", "CNI network configuration directory to add the plugin to; empty disables")
	fs.BoolVar(&o.cniUninstall, "cni-uninstall-on-exit", false, "remove the plugin from the CNI chain on a clean shutdown")
	fs.StringVar(&o.cniPluginSocket, "cni-plugin-socket", "", "the agent socket as the plugin sees it on the host (default: --cni-socket)")
	fs.BoolVar(&cfg.DNSCapture, "dns-capture", false, "also redirect pods' DNS to ztunnel")
	fs.BoolVar(&cfg.IPv6, "ipv6", false, "also install IPv6 redirection")
	fs.DurationVar(&cfg.PodWait, "pod-wait", 0, "how long a CNI ADD waits for the pod source (0 = 10s)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, o, err
	}
	if fs.NArg() > 0 {
		return cfg, o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.ConfigDir != "" {
		// Local mode installs the plugin only when asked to.
		if !set["cni-bin-dir"] {
			o.cniBinDir = ""
		}
		if !set["cni-net-dir"] {
			o.cniNetDir = ""
		}
	}
	if cfg.NodeName == "" {
		return cfg, o, errors.New("--node-name (or $NODE_NAME) is required")
	}
	if o.netnsSearch {
		f := &nodeagent.NetnsFinder{ProcDir: o.procDir}
		for d := range strings.SplitSeq(o.netnsDirs, ",") {
			if d = strings.TrimSpace(d); d != "" {
				f.NetnsDirs = append(f.NetnsDirs, d)
			}
		}
		cfg.Finder = f
	}
	return cfg, o, nil
}

func run(cfg nodeagent.DaemonConfig, o options, logger *slog.Logger) error {
	if cfg.ConfigDir == "" {
		rc, err := kube.RESTConfig(o.kubeconfig, "")
		if err != nil {
			return err
		}
		clients, err := kube.NewClients(rc, "zmesh-nodeagent")
		if err != nil {
			return err
		}
		cfg.Source = kubesource.ForDaemon(kubesource.Config{Client: clients.Kube, NodeName: cfg.NodeName, Logger: logger})
	}
	installer, err := newInstaller(cfg, o, logger)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := nodeagent.NewDaemon(cfg)
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	// The plugin goes into the chain once the agent answers it.
	if err := installer.Start(); err != nil {
		d.Stop()
		return err
	}
	<-ctx.Done()
	installer.Stop()
	d.Stop()
	return nil
}

func newInstaller(cfg nodeagent.DaemonConfig, o options, logger *slog.Logger) (*cniinstall.Installer, error) {
	bin := o.cniBinary
	if bin == "" && o.cniBinDir != "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating zmesh-cni: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), cniinstall.PluginType)
	}
	sock := o.cniPluginSocket
	if sock == "" {
		sock = cfg.CNISocket
	}
	return cniinstall.New(cniinstall.Config{
		BinDir: o.cniBinDir, PluginBinary: bin, NetDir: o.cniNetDir,
		Plugin:          map[string]any{"agent_socket": sock},
		UninstallOnExit: o.cniUninstall, Logger: logger,
	})
}
