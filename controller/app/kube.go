package app

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/zmesh/zmesh/controller/leader"
	"github.com/zmesh/zmesh/controller/rootcm"
	"github.com/zmesh/zmesh/controller/status"
	"github.com/zmesh/zmesh/controller/waypoints"
	"github.com/zmesh/zmesh/pkg/kube"
)

// LeaseName is the leader-election Lease of the controller's writers.
const LeaseName = "zmesh-controller"

// kubeWriters are the controller's writes to the API server. They run only
// on the elected replica; every replica serves xDS and the CA.
type kubeWriters struct {
	rootCM    *rootcm.Publisher
	waypoints *waypoints.Deployer
	status    *status.Writer // fed every index build by apply
}

// connectKube builds the API clients (Kubernetes mode).
func (a *App) connectKube() error {
	if a.cfg.Kube.Clients != nil {
		a.kube = a.cfg.Kube.Clients
		return nil
	}
	rc, err := kube.RESTConfig(a.cfg.Kube.Kubeconfig, "")
	if err != nil {
		return err
	}
	a.kube, err = kube.NewClients(rc, "zmesh-controller")
	return err
}

func (a *App) disabled(writer string) bool { return slices.Contains(a.cfg.Kube.Disable, writer) }

// newWriters builds the leader-only writers; Start runs them under the
// elector.
func (a *App) newWriters() error {
	if !a.disabled("rootcm") {
		opts := rootcm.Options{
			Client:  a.kube.Kube,
			RootPEM: a.RootPEM(),
			Logger:  a.log.With("component", "rootcm"),
		}
		// The publisher takes one selector; with several (ORed), it
		// publishes everywhere rather than miss a selected namespace.
		if sels := a.discovery.selectors; len(sels) == 1 {
			opts.NamespaceSelector = sels[0]
		}
		p, err := rootcm.New(opts)
		if err != nil {
			return fmt.Errorf("root ConfigMap publisher: %w", err)
		}
		a.writers.rootCM = p
	}
	if !a.disabled("waypoints") {
		d, err := waypoints.New(waypoints.Options{
			Clients:           a.kube,
			Image:             a.cfg.Kube.WaypointImage,
			ControllerAddress: a.cfg.Kube.ControllerAddress,
			ControllerSAN:     "istiod." + a.cfg.Kube.SystemNamespace + ".svc",
			ExtraArgs:         a.waypointArgs(),
			TrustDomain:       a.cfg.Index.TrustDomain,
			ClusterID:         a.cfg.Index.ClusterID,
			DomainSuffix:      a.cfg.Index.DomainSuffix,
			Selects:           a.namespaceSelected,
			Logger:            a.log.With("component", "waypoints"),
		})
		if err != nil {
			return fmt.Errorf("waypoint deployer: %w", err)
		}
		a.writers.waypoints = d
	}
	if !a.disabled("status") {
		w, err := status.New(status.Options{Clients: a.kube, Selects: a.namespaceSelected, Logger: a.log.With("component", "status")})
		if err != nil {
			return fmt.Errorf("status writer: %w", err)
		}
		a.writers.status = w
	}
	return nil
}

// startElector campaigns for the writers' Lease.
func (a *App) startElector(ctx context.Context) error {
	e, err := leader.New(leader.Options{
		Clients:       a.kube,
		Namespace:     a.cfg.Kube.SystemNamespace,
		Name:          LeaseName,
		Identity:      a.cfg.Kube.Identity,
		LeaseDuration: a.cfg.Kube.LeaseDuration,
		RenewDeadline: a.cfg.Kube.RenewDeadline,
		RetryPeriod:   a.cfg.Kube.RetryPeriod,
		Registerer:    a.registry,
		Logger:        a.log.With("component", "leader"),
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	if w := a.writers.rootCM; w != nil {
		e.Add("rootcm", w.Run)
	}
	if w := a.writers.waypoints; w != nil {
		e.Add("waypoints", w.Run)
	}
	if w := a.writers.status; w != nil {
		e.Add("status", w.Run)
	}
	if err := e.Start(ctx); err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	a.elector = e
	return nil
}

// IsLeader reports whether this replica runs the writers (always false in
// local mode).
func (a *App) IsLeader() bool { return a.elector != nil && a.elector.IsLeader() }

// waypointArgs are the flags every deployed waypoint gets beyond its
// controller's address.
func (a *App) waypointArgs() []string {
	var args []string
	if e := a.cfg.Kube.WaypointOTLPEndpoint; e != "" {
		args = append(args, "--otlp-endpoint="+e)
		if p := a.cfg.Kube.WaypointTraceSampling; p > 0 {
			args = append(args, "--trace-sampling="+strconv.FormatFloat(p, 'f', -1, 64))
		}
	}
	if f := a.cfg.Kube.WaypointAccessLogFile; f != "" {
		args = append(args, "--access-log-file="+f)
	}
	return args
}
