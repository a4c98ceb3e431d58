package zmeshctl

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/zmesh/zmesh/pkg/kube"
)

// kubeFlags are the flags every command that talks to the API server shares.
type kubeFlags struct {
	kubeconfig string
	context    string
	namespace  string
}

func (k *kubeFlags) register(c *cobra.Command) {
	f := c.PersistentFlags()
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default the current one)")
	f.StringVarP(&k.namespace, "namespace", "n", "", "namespace (default the context's, else \"default\")")
}

// clients connects to the API server the flags name.
func (k *kubeFlags) clients() (*kube.Clients, error) {
	cfg, err := kube.RESTConfig(k.kubeconfig, k.context)
	if isEmptyConfig(err) {
		return nil, errors.New("no Kubernetes configuration found: pass --kubeconfig, set $KUBECONFIG, or run inside a cluster")
	}
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes configuration: %w", err)
	}
	c, err := kube.NewClients(cfg, "zmeshctl")
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ns is the namespace to work in: -n, else the kubeconfig context's, else
// the in-cluster service account's, else "default".
func (k *kubeFlags) ns() string {
	if k.namespace != "" {
		return k.namespace
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
	if ns, _, err := cc.Namespace(); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// errGatewayAPIMissing means the API server does not serve Gateway API's
// v1 Gateway.
var errGatewayAPIMissing = errors.New("the Gateway API CRDs are not installed in this cluster " +
	"(install them, e.g. `helm install zmesh-base charts/base --set gatewayAPI.installCRDs=true`)")

// explain turns API errors a person cannot act on into ones they can:
// unreachable servers and missing CRDs. Other errors pass through.
func explain(c *kube.Clients, err error) error {
	if err == nil {
		return nil
	}
	var uerr *url.Error
	var nerr net.Error
	if errors.As(err, &uerr) || errors.As(err, &nerr) {
		host := ""
		if c != nil && c.Config != nil {
			host = " at " + c.Config.Host
		}
		return fmt.Errorf("cannot reach the Kubernetes API server%s: %w", host, err)
	}
	return err
}

// checkGatewayAPI fails with errGatewayAPIMissing when the server does not
// serve gateway.networking.k8s.io/v1 gateways.
func checkGatewayAPI(c *kube.Clients) error {
	res, err := c.Kube.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
	if apierrors.IsNotFound(err) {
		return errGatewayAPIMissing
	}
	if err != nil {
		return explain(c, fmt.Errorf("discovering the Gateway API: %w", err))
	}
	for _, r := range res.APIResources {
		if r.Name == "gateways" {
			return nil
		}
	}
	return errGatewayAPIMissing
}

// isEmptyConfig reports whether err (or one it wraps) says no kubeconfig was
// found; clientcmd.IsEmptyConfig does not look through wrapping.
func isEmptyConfig(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if clientcmd.IsEmptyConfig(err) {
			return true
		}
	}
	return false
}
