package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/controller/configdir"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/kubesource"
	"github.com/zmesh/zmesh/controller/leader"
	"github.com/zmesh/zmesh/controller/publish"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/metrics"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// Source delivers snapshots of Kubernetes objects to the app: the config
// directory in local mode, the Kubernetes API otherwise.
type Source interface {
	Start(ctx context.Context) error
	Stop()
}

// App is a running controller. Create it with New, then Start; Stop shuts
// everything down and waits for it.
type App struct {
	cfg      Config
	log      *slog.Logger
	nodeIDs  []spiffeid.ID
	registry *prometheus.Registry

	// Set by Start; read-only afterwards.
	kube      *kube.Clients   // Kubernetes mode only
	elector   *leader.Elector // Kubernetes mode only
	writers   kubeWriters     // Kubernetes mode only
	authority *ca.Authority
	serving   *ca.ServingCert
	// stopReload ends the plugged-in CA's Reloader (nil when not running).
	stopReload context.CancelFunc
	xds        *xdsserver.Server
	publisher  *publish.Publisher // used by apply only
	source     Source
	grpc       *grpc.Server
	grpcLis    net.Listener
	mon        *http.Server
	monLis     net.Listener
	wg         sync.WaitGroup
	stopOnce   sync.Once

	discovery *discovery
	// selected holds the namespaces the discovery selectors chose in the
	// latest snapshot (nil: no selectors, all are).
	selected atomic.Pointer[map[string]bool]

	state atomic.Pointer[snapshot] // latest index output; nil before the first
	// applyMu serialises apply so that snapshots reach xDS in order, and
	// guards lastProblems.
	applyMu      sync.Mutex
	lastProblems map[index.Problem]bool
}

// New validates cfg. It performs no I/O.
func New(cfg Config) (*App, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("controller config: %w", err)
	}
	var nodeIDs []spiffeid.ID
	for _, s := range cfg.NodeIdentities {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, fmt.Errorf("controller config: node identity %q: %w", s, err)
		}
		nodeIDs = append(nodeIDs, id)
	}
	disc, err := newDiscovery(cfg.Kube.DiscoverySelectors)
	if err != nil {
		return nil, fmt.Errorf("controller config: %w", err)
	}
	reg := metrics.NewRegistry()
	return &App{cfg: cfg, log: cfg.Logger, nodeIDs: nodeIDs, registry: reg, discovery: disc}, nil
}

// Start loads (or creates) the CA, starts serving gRPC and monitoring, and
// loads the first snapshot from the source. On Kubernetes it also starts
// leader election for the writers (waypoint deployer, root ConfigMaps,
// status). ctx bounds the start only: what Start begins runs until Stop. On
// error, everything already started is stopped.
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Stop()
		}
	}()
	// Long-lived work keeps ctx's values but not its deadline; Stop ends it.
	ctx = context.WithoutCancel(ctx)
	if a.kubeMode() {
		if err := a.connectKube(); err != nil {
			return err
		}
	}
	if err := a.startCA(ctx); err != nil {
		return err
	}
	src, pods, err := a.newSource()
	if err != nil {
		return err
	}
	authn, err := a.authenticator(pods)
	if err != nil {
		return err
	}
	a.xds, err = xdsserver.New(xdsserver.Options{
		Authenticator: authn,
		Registry:      a.registry,
		Logger:        a.log.With("component", "xds"),
		DebounceQuiet: a.cfg.DebounceQuiet,
		DebounceMax:   a.cfg.DebounceMax,
	})
	if err != nil {
		return err
	}
	caServer, err := ca.NewServer(ca.ServerOptions{
		Authority:             a.authority,
		Authenticator:         authn,
		NodeWorkloads:         nodeWorkloads{a},
		TrustedNodeIdentities: a.nodeIDs,
		Registerer:            a.registry,
		Logger:                a.log.With("component", "ca"),
	})
	if err != nil {
		return err
	}
	if a.kubeMode() {
		// Writers need the first snapshot's consumers ready before the
		// source delivers it.
		if err := a.newWriters(); err != nil {
			return err
		}
	}
	if err := a.newPublisher(); err != nil {
		return err
	}
	// The first snapshot is published before gRPC serves: a client that
	// reconnects must never see an empty state and drop what it holds.
	if err := src.Start(ctx); err != nil {
		return err
	}
	a.source = src
	if err := a.startGRPC(caServer); err != nil {
		return err
	}
	if err := a.startMonitoring(); err != nil {
		return err
	}
	if a.kubeMode() {
		if err := a.startElector(ctx); err != nil {
			return err
		}
	}
	if err := a.startCAReload(ctx); err != nil {
		return err
	}
	a.log.Info("controller started", "grpc", a.grpcLis.Addr().String(), "configDir", a.cfg.ConfigDir)
	return nil
}

// kubeMode reports whether the controller reads the Kubernetes API (rather
// than a manifest directory).
func (a *App) kubeMode() bool { return a.cfg.ConfigDir == "" }

// newSource builds the manifest-directory or Kubernetes source. pods is how
// the TokenReview authenticator finds a caller's pod (nil in local mode).
func (a *App) newSource() (Source, auth.PodLookup, error) {
	if !a.kubeMode() {
		src, err := configdir.New(configdir.Options{
			Dir:      a.cfg.ConfigDir,
			Validate: index.Validate,
			OnChange: a.apply,
			Logger:   a.log,
		})
		return src, nil, err
	}
	src, err := kubesource.New(kubesource.Options{
		Clients:  a.kube,
		Validate: index.Validate,
		OnChange: a.apply,
		Logger:   a.log.With("component", "kubesource"),
	})
	if err != nil {
		return nil, nil, err
	}
	return src, src, nil
}

func (a *App) startCA(ctx context.Context) error {
	opts := ca.LoadOptions{TrustDomain: a.cfg.Index.TrustDomain, Logger: a.log}
	var material *ca.SigningMaterial
	var err error
	if a.kubeMode() {
		material, err = ca.LoadOrCreateFromSecret(ctx, a.kube.Kube, a.cfg.Kube.SystemNamespace, opts)
	} else {
		material, err = ca.LoadOrCreate(a.cfg.CADir, opts)
	}
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(a.cfg.Index.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	a.authority, err = ca.NewAuthority(material, ca.AuthorityOptions{TrustDomain: td})
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	dns, ips := splitNames(a.cfg.ServingNames)
	a.serving, err = ca.NewServingCert(a.authority, ca.ServingCertOptions{DNSNames: dns, IPs: ips, Logger: a.log})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	if err := a.serving.Start(ctx); err != nil {
		a.serving = nil
		return fmt.Errorf("serving certificate: %w", err)
	}
	return nil
}

// startCAReload follows a plugged-in CA's files or Secret, as istiod
// does: a new version signs every later certificate, the serving
// certificate is reissued with it and its trust bundle is published.
func (a *App) startCAReload(ctx context.Context) error {
	if !a.authority.Material().Plugged {
		return nil // a self-signed root is the controller's own
	}
	load := ca.PluggedDirLoader(a.cfg.CADir)
	if a.kubeMode() {
		load = ca.PluggedSecretLoader(a.kube.Kube, a.cfg.Kube.SystemNamespace)
	}
	r, err := ca.NewReloader(ca.ReloaderOptions{
		Load:      load,
		Authority: a.authority,
		OnChange:  a.caReloaded,
		Interval:  a.cfg.CAReloadInterval,
		Logger:    a.log.With("component", "ca"),
	})
	if err != nil {
		return err
	}
	ctx, a.stopReload = context.WithCancel(ctx)
	a.wg.Go(func() { r.Run(ctx) })
	return nil
}

// caReloaded reissues the serving certificate and publishes the new trust
// bundle after the plugged-in CA changed.
func (a *App) caReloaded(m *ca.SigningMaterial) {
	a.serving.Renew()
	if a.writers.rootCM != nil {
		if err := a.writers.rootCM.SetRoot(mtls.EncodeCertificatesPEM(m.Anchors()...)); err != nil {
			a.log.Error("publishing the new trust bundle failed", "error", err)
		}
	}
}

// authenticator accepts static tokens (when configured), Kubernetes
// service-account tokens (on Kubernetes) and mesh client certificates.
func (a *App) authenticator(pods auth.PodLookup) (auth.Authenticator, error) {
	chain := auth.Chain{}
	if a.cfg.TokensFile != "" {
		tokens, err := auth.LoadStaticTokens(a.cfg.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("tokens file: %w", err)
		}
		chain = append(chain, tokens)
	}
	if a.kubeMode() {
		tr, err := auth.NewTokenReview(auth.TokenReviewOptions{
			Client:      a.kube.Kube,
			TrustDomain: a.authority.TrustDomain(),
			Pods:        pods,
			Logger:      a.log.With("component", "tokenreview"),
		})
		if err != nil {
			return nil, fmt.Errorf("token review: %w", err)
		}
		chain = append(chain, tr)
	}
	chain = append(chain, auth.ClientCert{TrustDomain: a.authority.TrustDomain()})
	return chain, nil
}

func (a *App) startGRPC(caServer *ca.Server) error {
	tlsCfg, err := mtls.ServerConfig(a.serving.Holder(), mtls.ServerOptions{
		TrustDomain:        a.authority.TrustDomain(),
		ClientCertOptional: true, // token callers bootstrap without one
	})
	if err != nil {
		return fmt.Errorf("gRPC TLS: %w", err)
	}
	a.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	a.xds.Register(a.grpc)
	caServer.Register(a.grpc)
	if err := a.xds.Start(); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", a.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("gRPC listen: %w", err)
	}
	a.grpcLis = lis
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.log.Error("gRPC server failed", "err", err)
		}
	}()
	return nil
}

// Stop stops the source, the servers and the certificate renewal, and waits
// for their goroutines. It is safe after a failed Start and idempotent.
func (a *App) Stop() {
	a.stopOnce.Do(a.stop)
}

func (a *App) stop() {
	if a.stopReload != nil {
		a.stopReload()
	}
	if a.elector != nil {
		a.elector.Stop() // writers first: they act on what the source saw
	}
	if a.source != nil {
		a.source.Stop()
	}
	if a.mon != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.mon.Shutdown(ctx)
		cancel()
	}
	if a.xds != nil {
		a.xds.Stop() // ends streams so GracefulStop need not wait for clients
	}
	if a.grpc != nil {
		a.grpc.GracefulStop()
	}
	if a.serving != nil {
		a.serving.Stop()
	}
	a.wg.Wait()
}

// GRPCAddr is the address gRPC listens on (useful with port 0).
func (a *App) GRPCAddr() net.Addr { return a.grpcLis.Addr() }

// MonitoringAddr is the monitoring listener's address, nil if disabled.
func (a *App) MonitoringAddr() net.Addr {
	if a.monLis == nil {
		return nil
	}
	return a.monLis.Addr()
}

// RootPEM is the mesh's trust bundle in PEM (the root, or the old and new
// roots while a plugged-in root is rotated), for clients to trust.
func (a *App) RootPEM() []byte { return mtls.EncodeCertificatesPEM(a.authority.Roots()...) }

// Run starts the controller and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	a.log.Info("controller stopping")
	a.Stop()
	return nil
}

// splitNames separates IP literals from DNS names; nil in means defaults.
func splitNames(names []string) (dns []string, ips []net.IP) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}
