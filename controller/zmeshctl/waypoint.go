package zmeshctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapply "sigs.k8s.io/gateway-api/applyconfiguration/apis/v1"

	"github.com/zmesh/zmesh/pkg/kube"
)

// Names and labels of Istio's waypoint API (see architecture.md).
const (
	waypointClass        = "istio-waypoint"
	defaultWaypointName  = "waypoint"
	labelWaypointFor     = "istio.io/waypoint-for"
	labelUseWaypoint     = "istio.io/use-waypoint"
	labelRevision        = "istio.io/rev"
	annotationForSA      = "istio.io/for-service-account"
	meshListenerName     = "mesh"
	meshListenerPort     = 15008
	meshListenerProtocol = "HBONE"
	fieldManager         = "zmeshctl"
)

func newWaypointCommand(k *kubeFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "waypoint",
		Short: "Manage waypoint proxies (Gateways of class istio-waypoint)",
	}
	c.AddCommand(newWaypointApplyCommand(k), newWaypointListCommand(k),
		newWaypointStatusCommand(k), newWaypointDeleteCommand(k))
	return c
}

type applyOptions struct {
	name            string
	serviceAccount  string
	forType         string
	enrollNamespace bool
	wait            bool
	timeout         time.Duration
}

func newWaypointApplyCommand(k *kubeFlags) *cobra.Command {
	o := &applyOptions{}
	c := &cobra.Command{
		Use:   "apply",
		Short: "Create or update a waypoint Gateway",
		Example: `  zmeshctl waypoint apply -n demo --enroll-namespace --wait
  zmeshctl waypoint apply -n demo --service-account reviews
  zmeshctl waypoint apply -n demo --name wp --for workload`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch o.forType {
			case "", "service", "workload", "all", "none":
			default:
				return fmt.Errorf("--for must be service, workload, all or none, not %q", o.forType)
			}
			if o.name == "" {
				o.name = defaultWaypointName
				if o.serviceAccount != "" {
					o.name = o.serviceAccount
				}
			}
			c, err := k.clients()
			if err != nil {
				return err
			}
			return applyWaypoint(cmd.Context(), c, k.ns(), o, cmd.OutOrStdout())
		},
	}
	f := c.Flags()
	f.StringVar(&o.name, "name", "", `waypoint name (default the service account, else "waypoint")`)
	f.StringVar(&o.serviceAccount, "service-account", "", "bind the waypoint to every pod of this service account")
	f.StringVar(&o.forType, "for", "", "traffic the waypoint handles: service, workload, all or none (label istio.io/waypoint-for)")
	f.BoolVar(&o.enrollNamespace, "enroll-namespace", false, "label the namespace istio.io/use-waypoint=<name>")
	f.BoolVar(&o.wait, "wait", false, "wait until the controller reports the waypoint Programmed")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long --wait waits")
	return c
}

// waypointGateway is the Gateway `waypoint apply` writes.
func waypointGateway(ns string, o *applyOptions) *gwapply.GatewayApplyConfiguration {
	gw := gwapply.Gateway(o.name, ns).
		WithSpec(gwapply.GatewaySpec().
			WithGatewayClassName(waypointClass).
			WithListeners(gwapply.Listener().
				WithName(meshListenerName).
				WithPort(meshListenerPort).
				WithProtocol(meshListenerProtocol)))
	if o.forType != "" {
		gw.WithLabels(map[string]string{labelWaypointFor: o.forType})
	}
	if o.serviceAccount != "" {
		gw.WithAnnotations(map[string]string{annotationForSA: o.serviceAccount})
	}
	return gw
}

func applyWaypoint(ctx context.Context, c *kube.Clients, ns string, o *applyOptions, out io.Writer) error {
	if err := checkGatewayAPI(c); err != nil {
		return err
	}
	gws := c.Gateway.GatewayV1().Gateways(ns)
	existing, err := gws.Get(ctx, o.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return explain(c, fmt.Errorf("reading gateway %s/%s: %w", ns, o.name, err))
	case string(existing.Spec.GatewayClassName) != waypointClass:
		return fmt.Errorf("gateway %s/%s exists with class %q: it is not a waypoint, choose another --name",
			ns, o.name, existing.Spec.GatewayClassName)
	}
	gw, err := gws.Apply(ctx, waypointGateway(ns, o), metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return explain(c, fmt.Errorf("applying waypoint %s/%s: %w", ns, o.name, err))
	}
	fmt.Fprintf(out, "waypoint %s/%s applied\n", ns, o.name)
	if o.enrollNamespace {
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, labelUseWaypoint, o.name)
		if _, err := c.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
			return explain(c, fmt.Errorf("labelling namespace %s: %w", ns, err))
		}
		fmt.Fprintf(out, "namespace %s labeled with \"%s: %s\"\n", ns, labelUseWaypoint, o.name)
	}
	if !o.wait {
		return nil
	}
	start := time.Now()
	if err := waitProgrammed(ctx, c, gw, o.timeout); err != nil {
		return err
	}
	fmt.Fprintf(out, "waypoint %s/%s programmed after %s\n", ns, o.name, time.Since(start).Round(time.Millisecond))
	return nil
}

// errNotProgrammed reports a wait that ran out; it carries the last
// condition seen.
var errNotProgrammed = errors.New("waypoint not programmed")

// waitProgrammed polls gw until its Programmed condition is True for the
// generation applied, or timeout passes.
func waitProgrammed(ctx context.Context, c *kube.Clients, gw *gwv1.Gateway, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// last describes the Programmed condition seen; lastErr the latest
	// failed read, reported only when no condition was ever read.
	last, lastErr := "", error(nil)
	for {
		cur, err := c.Gateway.GatewayV1().Gateways(gw.Namespace).Get(ctx, gw.Name, metav1.GetOptions{})
		switch {
		case err == nil:
			cond := meta.FindStatusCondition(cur.Status.Conditions, string(gwv1.GatewayConditionProgrammed))
			switch {
			case cond == nil:
				last = "no Programmed condition yet"
			case cond.ObservedGeneration != 0 && cond.ObservedGeneration < gw.Generation:
				last = fmt.Sprintf("Programmed condition is for generation %d, not %d", cond.ObservedGeneration, gw.Generation)
			case cond.Status == metav1.ConditionTrue:
				return nil
			default:
				last = fmt.Sprintf("Programmed=%s reason %s: %s", cond.Status, cond.Reason, cond.Message)
			}
		case apierrors.IsNotFound(err):
			return fmt.Errorf("waypoint %s/%s was deleted while waiting", gw.Namespace, gw.Name)
		default:
			lastErr = err
		}
		select {
		case <-ctx.Done():
			why := last
			if why == "" && lastErr != nil {
				why = explain(c, lastErr).Error()
			}
			return fmt.Errorf("%w: %s/%s after %s (%s); is the zmesh controller running?",
				errNotProgrammed, gw.Namespace, gw.Name, timeout, why)
		case <-tick.C:
		}
	}
}
