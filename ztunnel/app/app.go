package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/pkg/metrics"
	"github.com/zmesh/zmesh/pkg/proxyadmin"
	"github.com/zmesh/zmesh/pkg/trustbundle"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/ztunnel/authz"
	"github.com/zmesh/zmesh/ztunnel/identity"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// App is a running ztunnel. Create it with New, then Start; Stop shuts
// everything down and waits for it.
type App struct {
	cfg      Config
	log      *slog.Logger
	td       spiffeid.TrustDomain
	registry *prometheus.Registry

	// Set by Start; read-only afterwards.
	roots      *trustbundle.File // the mesh root file, reloaded as it changes
	conn       *grpc.ClientConn
	state      *state.State
	xds        *xds.Client
	identities *identity.Manager
	pool       *hbone.Pool
	tracker    *authz.Tracker
	pods       *pods
	zds        *zds.Client
	http       *proxyadmin.Servers // admin, metrics and readiness endpoints
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	zdsSynced atomic.Bool // the node agent's snapshot has been applied
}

// New validates cfg. It performs no I/O.
func New(cfg Config) (*App, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("ztunnel config: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ztunnel config: trust domain: %w", err)
	}
	reg := metrics.NewRegistry()
	return &App{cfg: cfg, log: cfg.Logger, td: td, registry: reg}, nil
}

// Start connects to the controller, starts certificate management, the
// proxies' shared machinery and the HTTP endpoints. Pods arrive from the
// node agent afterwards. ctx bounds the start only: what Start begins runs
// until Stop. On error everything started is stopped.
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Stop()
		}
	}()
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	a.roots, err = trustbundle.Load(a.cfg.RootCertFile, a.td, a.log.With("component", "trust"))
	if err != nil {
		return fmt.Errorf("mesh root: %w", err)
	}
	a.roots.Start(0)
	creds, err := caclient.TransportCredentialsFrom(a.roots.Authorities, a.cfg.ControllerName)
	if err != nil {
		return err
	}
	a.conn, err = grpc.NewClient(a.cfg.ControllerAddr, grpc.WithTransportCredentials(creds), grpc.WithKeepaliveParams(xds.ControllerKeepalive))
	if err != nil {
		return fmt.Errorf("controller connection: %w", err)
	}

	a.state = state.New(a.log.With("component", "state"))
	a.xds, err = xds.New(xds.Config{
		Address:     a.cfg.ControllerAddr,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(creds)},
		Node:        xds.Node{IP: a.cfg.NodeIP, PodName: a.cfg.PodName, Namespace: a.cfg.PodNamespace, NodeName: a.cfg.NodeName},
		ClusterID:   a.cfg.ClusterID,
		Token:       func(context.Context) (string, error) { return readToken(a.cfg.TokenFile) },
		Types: []xds.TypeConfig{
			{TypeURL: workloadapi.AddressTypeURL, New: func() proto.Message { return &workloadapi.Address{} }, Handler: a.state.AddressHandler()},
			{TypeURL: security.AuthorizationTypeURL, New: func() proto.Message { return &security.Authorization{} }, Handler: a.state.AuthorizationHandler()},
		},
		Logger: a.log.With("component", "xds"),
	})
	if err != nil {
		return err
	}
	if err := a.xds.Start(); err != nil {
		return err
	}

	ca, err := caclient.New(a.conn, caclient.Options{RootsFrom: a.roots.Authorities, TokenFile: a.cfg.TokenFile})
	if err != nil {
		return err
	}
	a.identities, err = identity.New(identity.Options{Fetcher: ca, Logger: a.log.With("component", "identity")})
	if err != nil {
		return err
	}
	if err := a.identities.Start(ctx); err != nil {
		return err
	}
	// A root rotation that retires a root renews the certificates issued
	// under it at once.
	a.roots.OnChange(func() { a.identities.RenewUntrusted(a.roots.Authorities()) })

	engine := authz.NewEngine(a.state, a.log.With("component", "authz"))
	a.tracker = authz.NewTracker(engine, a.log.With("component", "authz"))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.tracker.Run(ctx)
	}()

	bundle := a.roots.Bundle()
	a.pool, err = hbone.NewPool(hbone.PoolConfig{TrustBundle: bundle, Dial: a.dialFromPod, Logger: a.log.With("component", "hbone")})
	if err != nil {
		return err
	}
	metrics, err := proxy.NewMetrics(a.registry)
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{
		Resolver:     &resolver{state: a.state, network: a.cfg.Network},
		Authorizer:   &authorizer{state: a.state, engine: engine, tracker: a.tracker, policiesSynced: a.xds.Synced(security.AuthorizationTypeURL)},
		Certificates: a.certificate,
		Pool:         a.pool,
		TrustBundle:  bundle,
		TrustDomain:  a.td,
		Metrics:      metrics,
		Logger:       a.log.With("component", "proxy"),
	})
	if err != nil {
		return err
	}
	a.pods = newPods(px, a.identities, a.state, a.td, a.cfg.ClusterID, a.log.With("component", "pods"))
	if err := a.startZDS(ctx); err != nil {
		return err
	}
	if err := a.startHTTP(); err != nil {
		return err
	}
	a.log.Info("ztunnel started", "node", a.cfg.NodeName, "controller", a.cfg.ControllerAddr)
	return nil
}

// Stop ends every component, pods first, and waits for them.
func (a *App) Stop() {
	if a.cancel != nil {
		a.cancel()
	}
	a.stopZDS()
	if a.pods != nil {
		a.pods.stopAll()
	}
	a.http.Stop()
	if a.pool != nil {
		_ = a.pool.Close()
	}
	if a.identities != nil {
		a.identities.Stop()
	}
	if a.xds != nil {
		a.xds.Stop()
	}
	if a.conn != nil {
		_ = a.conn.Close()
	}
	if a.roots != nil {
		a.roots.Stop()
	}
	a.wg.Wait()
}

// Ready returns nil once ztunnel serves traffic (both xDS types applied and
// the node agent's snapshot received), otherwise why not.
func (a *App) Ready() error {
	if why := a.notReady(); why != "" {
		return errors.New(why)
	}
	return nil
}

// notReady explains why ztunnel is not ready, "" when it is.
func (a *App) notReady() string {
	for _, typ := range []string{workloadapi.AddressTypeURL, security.AuthorizationTypeURL} {
		select {
		case <-a.xds.Synced(typ):
		default:
			return "waiting for " + typ[strings.LastIndex(typ, ".")+1:] + " from the controller"
		}
	}
	if !a.zdsSynced.Load() {
		return "waiting for the node agent's pod snapshot"
	}
	return ""
}

// certificate serves a pod identity's current certificate to TLS.
func (a *App) certificate(id spiffeid.ID) (*tls.Certificate, error) {
	c, err := a.identities.Certificate(id)
	if err != nil {
		return nil, err
	}
	return c.TLSCertificate(), nil
}

// dialFromPod opens an outbound HBONE connection from the pod that owns the
// source address, so it leaves with that pod's IP and is not recaptured.
func (a *App) dialFromPod(ctx context.Context, req *hbone.DialRequest) (net.Conn, error) {
	s := a.pods.socketsFor(req.SourceIP)
	if s == nil {
		return nil, fmt.Errorf("no enrolled pod has address %s", req.SourceIP)
	}
	return s.Dial(ctx, req.NextHop, netip.Addr{})
}

// Run starts ztunnel and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	a.log.Info("ztunnel stopping")
	a.Stop()
	return nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", errors.New("token file is empty")
	}
	return t, nil
}
