// Package app wires the waypoint together: its own identity from the mesh
// CA, the xDS client feeding the configuration store, the HBONE server on
// 15008 that hands tunnels to the L7 proxy, the pooled HBONE client to
// endpoints, and the admin, metrics and readiness endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/pkg/metrics"
	"github.com/zmesh/zmesh/pkg/proxyadmin"
	"github.com/zmesh/zmesh/pkg/spiffe"
	"github.com/zmesh/zmesh/pkg/trustbundle"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/filter/jwt"
	"github.com/zmesh/zmesh/waypoint/listener"
	"github.com/zmesh/zmesh/waypoint/proxy"
	"github.com/zmesh/zmesh/waypoint/telemetry"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// App is a running waypoint. Create it with New, then Start; Stop shuts
// everything down and waits for it.
type App struct {
	cfg      Config
	log      *slog.Logger
	td       spiffeid.TrustDomain
	id       spiffeid.ID
	registry *prometheus.Registry

	// Set by Start; read-only afterwards.
	roots     *trustbundle.File // the mesh root file, reloaded as it changes
	conn      *grpc.ClientConn
	store     *config.Store
	xds       *xds.Client
	ident     *identity
	pool      *hbone.Pool
	upstreams *upstream.Manager
	proxy     *proxy.Proxy
	hbone     *hbone.Server
	tracer    *telemetry.Exporter
	// accessLogs are the mesh's access log (nil when off) and the
	// listeners' logs to standard output and error.
	accessLogs []*telemetry.AccessLog
	hboneAddr  net.Addr
	http       *proxyadmin.Servers // admin, metrics and readiness endpoints
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New validates cfg. It performs no I/O.
func New(cfg Config) (*App, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("waypoint config: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("waypoint config: trust domain: %w", err)
	}
	id, err := spiffe.WorkloadID(cfg.TrustDomain, cfg.PodNamespace, cfg.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("waypoint config: identity: %w", err)
	}
	return &App{cfg: cfg, log: cfg.Logger, td: td, id: id, registry: metrics.NewRegistry()}, nil
}

// Start connects to the controller, starts certificate management, the
// HBONE server and the HTTP endpoints. ctx bounds the start only. On error
// everything started is stopped.
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
	dialOpts := a.cfg.ControllerDialOptions
	if dialOpts == nil {
		creds, err := caclient.TransportCredentialsFrom(a.roots.Authorities, a.cfg.ControllerName)
		if err != nil {
			return err
		}
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	}
	a.conn, err = grpc.NewClient(a.cfg.ControllerAddr, append(dialOpts, grpc.WithKeepaliveParams(xds.ControllerKeepalive))...)
	if err != nil {
		return fmt.Errorf("controller connection: %w", err)
	}

	a.store = config.NewStore(a.log.With("component", "config"), &jwt.Fetcher{})
	var token func(context.Context) (string, error)
	if a.cfg.TokenFile != "" {
		token = func(context.Context) (string, error) { return readToken(a.cfg.TokenFile) }
	}
	a.xds, err = xds.New(xds.Config{
		Address:     a.cfg.ControllerAddr,
		DialOptions: dialOpts,
		Node: xds.Node{Kind: "waypoint", IP: a.cfg.InstanceIP, PodName: a.cfg.PodName, Namespace: a.cfg.PodNamespace, NodeName: a.cfg.NodeName,
			Metadata: map[string]string{"SERVICE_ACCOUNT": a.cfg.ServiceAccount}},
		ClusterID: a.cfg.ClusterID,
		Token:     token,
		Types:     a.store.Types(),
		Logger:    a.log.With("component", "xds"),
	})
	if err != nil {
		return err
	}

	fetcher := a.cfg.Fetcher
	if fetcher == nil {
		ca, err := caclient.New(a.conn, caclient.Options{RootsFrom: a.roots.Authorities, TokenFile: a.cfg.TokenFile})
		if err != nil {
			return err
		}
		fetcher = ca
	}
	a.ident = &identity{id: a.id, fetch: fetcher, log: a.log.With("component", "identity"), renewNow: make(chan struct{}, 1)}
	a.roots.OnChange(func() { a.ident.renewIfUntrusted(a.roots.Authorities()) })
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.ident.run(ctx)
	}()

	bundle := a.roots.Bundle()
	poolCfg := hbone.PoolConfig{TrustBundle: bundle, Logger: a.log.With("component", "hbone")}
	if dial := a.cfg.DialUpstream; dial != nil {
		poolCfg.Dial = func(ctx context.Context, req *hbone.DialRequest) (net.Conn, error) { return dial(ctx, req.NextHop) }
	}
	a.pool, err = hbone.NewPool(poolCfg)
	if err != nil {
		return err
	}
	a.upstreams = upstream.NewManager(a.dialEndpoint)
	a.store.OnChange(func(s *config.Snapshot) {
		a.upstreams.Retain(func(name string) bool {
			return s.Cluster(name) != nil || strings.HasPrefix(name, proxy.DefaultClusterPrefix)
		})
	})
	m, err := telemetry.NewMetrics(a.registry)
	if err != nil {
		return err
	}
	if a.cfg.OTLPEndpoint != "" {
		a.tracer, err = telemetry.NewExporter(a.cfg.OTLPEndpoint, a.cfg.PodName+"."+a.cfg.PodNamespace, a.log.With("component", "otlp"))
		if err != nil {
			return err
		}
		a.tracer.Start()
	}
	bufs := hbone.NewBufferPool(0)
	meshLog := telemetry.NewBufferedAccessLog(a.cfg.AccessLog, a.cfg.AccessLogFlushInterval)
	listenerLogs := map[string]*telemetry.AccessLog{
		config.AccessLogStdout: telemetry.NewBufferedAccessLog(a.cfg.Stdout, a.cfg.AccessLogFlushInterval),
		config.AccessLogStderr: telemetry.NewBufferedAccessLog(a.cfg.Stderr, a.cfg.AccessLogFlushInterval),
	}
	a.accessLogs = []*telemetry.AccessLog{meshLog, listenerLogs[config.AccessLogStdout], listenerLogs[config.AccessLogStderr]}
	a.proxy, err = proxy.New(proxy.Config{Store: a.store, Upstreams: a.upstreams, Metrics: m,
		AccessLog: meshLog, ListenerLogs: listenerLogs, Tracer: a.tracer, SamplePPM: uint32(a.cfg.TraceSamplingPercent * 10_000),
		BufferPool: bufs, Logger: a.log.With("component", "proxy")})
	if err != nil {
		return err
	}
	h, err := listener.New(a.store, a.proxy, a.log.With("component", "listener"))
	if err != nil {
		return err
	}
	handshakeFailures, err := metrics.NewHandshakeFailures(a.registry)
	if err != nil {
		return err
	}
	a.hbone, err = hbone.NewServer(hbone.ServerConfig{Certificate: a.ident.certificate, TrustBundle: bundle, TrustDomain: a.td,
		Handler: h, Logger: a.log.With("component", "hbone"), BufferPool: bufs,
		HandshakeFailed: func(error) { handshakeFailures.Inc() }})
	if err != nil {
		return err
	}
	if err := a.xds.Start(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.HBONEAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.HBONEAddr, err)
	}
	a.hboneAddr = ln.Addr()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.hbone.Serve(ln); err != nil && !errors.Is(err, hbone.ErrServerClosed) {
			a.log.Error("hbone server stopped", "err", err)
		}
	}()
	if err := a.startHTTP(); err != nil {
		return err
	}
	a.log.Info("waypoint started", "identity", a.id.String(), "controller", a.cfg.ControllerAddr, "hbone", a.hboneAddr.String())
	return nil
}

// dialEndpoint opens an HBONE tunnel to an endpoint with the waypoint's
// own certificate, expecting the endpoint workload's identity.
func (a *App) dialEndpoint(ctx context.Context, t upstream.Target) (net.Conn, error) {
	return a.pool.Dial(ctx, &hbone.DialRequest{
		NextHop:     netip.AddrPortFrom(t.Addr.Addr(), 15008),
		Authority:   t.Addr,
		SourceID:    a.id,
		Certificate: a.ident.certificate,
		ExpectedIDs: []spiffeid.ID{t.Identity},
	})
}

// Stop ends every component and waits for them.
func (a *App) Stop() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.hbone != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5e9)
		if err := a.hbone.Shutdown(ctx); err != nil {
			_ = a.hbone.Close()
		}
		cancel()
	}
	a.http.Stop()
	if a.proxy != nil {
		a.proxy.Wait()
	}
	for _, l := range a.accessLogs {
		l.Flush()
	}
	if a.upstreams != nil {
		a.upstreams.Close()
	}
	if a.tracer != nil {
		a.tracer.Stop()
	}
	if a.pool != nil {
		_ = a.pool.Close()
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

// Ready returns nil once every xDS type is applied and a certificate is
// held, otherwise why not.
func (a *App) Ready() error {
	if why := a.notReady(); why != "" {
		return errors.New(why)
	}
	return nil
}

func (a *App) notReady() string {
	for _, t := range a.store.Types() {
		select {
		case <-a.xds.Synced(t.TypeURL):
		default:
			return "waiting for " + t.TypeURL[strings.LastIndex(t.TypeURL, ".")+1:] + " from the controller"
		}
	}
	if _, err := a.ident.certificate(); err != nil {
		return "waiting for a certificate"
	}
	return ""
}

// HBONEAddr is where tunnels are accepted; nil before Start.
func (a *App) HBONEAddr() net.Addr { return a.hboneAddr }

// Identity is the waypoint's SPIFFE ID.
func (a *App) Identity() spiffeid.ID { return a.id }

// Run starts the waypoint and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	a.log.Info("waypoint stopping")
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

// Store is the configuration store (for admin tooling and tests); nil
// before Start.
func (a *App) Store() *config.Store { return a.store }
