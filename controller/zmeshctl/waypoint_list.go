package zmeshctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/kube"
)

func newWaypointListCommand(k *kubeFlags) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List waypoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := k.clients()
			if err != nil {
				return err
			}
			ns := k.ns()
			if all {
				ns = metav1.NamespaceAll
			}
			return listWaypoints(cmd.Context(), c, ns, cmd.OutOrStdout())
		},
	}
	c.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list waypoints in every namespace")
	return c
}

// waypoints returns the Gateways of class istio-waypoint in ns ("" = all),
// sorted by namespace and name.
func waypoints(ctx context.Context, c *kube.Clients, ns string) ([]gwv1.Gateway, error) {
	if err := checkGatewayAPI(c); err != nil {
		return nil, err
	}
	list, err := c.Gateway.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, explain(c, fmt.Errorf("listing gateways: %w", err))
	}
	var out []gwv1.Gateway
	for _, gw := range list.Items {
		if gw.Spec.GatewayClassName == waypointClass {
			out = append(out, gw)
		}
	}
	slices.SortFunc(out, func(a, b gwv1.Gateway) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

func listWaypoints(ctx context.Context, c *kube.Clients, ns string, out io.Writer) error {
	gws, err := waypoints(ctx, c, ns)
	if err != nil {
		return err
	}
	if len(gws) == 0 {
		if ns == "" {
			fmt.Fprintln(out, "No waypoints found.")
		} else {
			fmt.Fprintf(out, "No waypoints found in namespace %s.\n", ns)
		}
		return nil
	}
	t := newTable(out)
	if ns == "" {
		t.row("NAMESPACE", "NAME", "REVISION", "PROGRAMMED")
	} else {
		t.row("NAME", "REVISION", "PROGRAMMED")
	}
	for _, gw := range gws {
		rev := gw.Labels[labelRevision]
		if rev == "" {
			rev = "default"
		}
		programmed := "False"
		if cond := meta.FindStatusCondition(gw.Status.Conditions, string(gwv1.GatewayConditionProgrammed)); cond != nil {
			programmed = string(cond.Status)
		}
		if ns == "" {
			t.row(gw.Namespace, gw.Name, rev, programmed)
		} else {
			t.row(gw.Name, rev, programmed)
		}
	}
	return t.flush()
}

func newWaypointStatusCommand(k *kubeFlags) *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the status conditions of waypoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := k.clients()
			if err != nil {
				return err
			}
			return waypointStatus(cmd.Context(), c, k.ns(), name, cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&name, "name", "", "only this waypoint (default every waypoint in the namespace)")
	return c
}

func waypointStatus(ctx context.Context, c *kube.Clients, ns, name string, out io.Writer) error {
	var gws []gwv1.Gateway
	if name != "" {
		gw, err := getWaypoint(ctx, c, ns, name)
		if err != nil {
			return err
		}
		gws = []gwv1.Gateway{*gw}
	} else {
		var err error
		if gws, err = waypoints(ctx, c, ns); err != nil {
			return err
		}
		if len(gws) == 0 {
			fmt.Fprintf(out, "No waypoints found in namespace %s.\n", ns)
			return nil
		}
	}
	t := newTable(out)
	t.row("NAMESPACE", "NAME", "STATUS", "TYPE", "REASON", "MESSAGE")
	for _, gw := range gws {
		if len(gw.Status.Conditions) == 0 {
			t.row(gw.Namespace, gw.Name, "-", "-", "-", "no status yet (is the zmesh controller running?)")
		}
		for _, cond := range gw.Status.Conditions {
			t.row(gw.Namespace, gw.Name, string(cond.Status), cond.Type, cond.Reason, cond.Message)
		}
	}
	return t.flush()
}

// getWaypoint reads one waypoint Gateway; a Gateway of another class is
// reported as not a waypoint.
func getWaypoint(ctx context.Context, c *kube.Clients, ns, name string) (*gwv1.Gateway, error) {
	if err := checkGatewayAPI(c); err != nil {
		return nil, err
	}
	gw, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("waypoint %s/%s not found", ns, name)
	}
	if err != nil {
		return nil, explain(c, fmt.Errorf("reading waypoint %s/%s: %w", ns, name, err))
	}
	if gw.Spec.GatewayClassName != waypointClass {
		return nil, fmt.Errorf("gateway %s/%s is not a waypoint (class %q)", ns, name, gw.Spec.GatewayClassName)
	}
	return gw, nil
}

func newWaypointDeleteCommand(k *kubeFlags) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "delete NAME... | --all",
		Short: "Delete waypoints",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return fmt.Errorf("give waypoint names or --all, not both or neither")
			}
			c, err := k.clients()
			if err != nil {
				return err
			}
			return deleteWaypoints(cmd.Context(), c, k.ns(), args, cmd.OutOrStdout())
		},
	}
	c.Flags().BoolVar(&all, "all", false, "delete every waypoint in the namespace")
	return c
}

// deleteWaypoints deletes the named waypoints, or every waypoint in ns when
// names is empty. Names that are not waypoints are refused before anything
// is deleted.
func deleteWaypoints(ctx context.Context, c *kube.Clients, ns string, names []string, out io.Writer) error {
	var gws []gwv1.Gateway
	if len(names) == 0 {
		var err error
		if gws, err = waypoints(ctx, c, ns); err != nil {
			return err
		}
		if len(gws) == 0 {
			fmt.Fprintf(out, "No waypoints found in namespace %s.\n", ns)
			return nil
		}
	}
	for _, n := range names {
		gw, err := getWaypoint(ctx, c, ns, n)
		if err != nil {
			return err
		}
		gws = append(gws, *gw)
	}
	for _, gw := range gws {
		err := c.Gateway.GatewayV1().Gateways(ns).Delete(ctx, gw.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &gw.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return explain(c, fmt.Errorf("deleting waypoint %s/%s: %w", ns, gw.Name, err))
		}
		fmt.Fprintf(out, "waypoint %s/%s deleted\n", ns, gw.Name)
	}
	return nil
}
