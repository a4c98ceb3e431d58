package kube

import (
	"errors"
	"fmt"
	"os"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// Clients bundles the typed clientsets built from one rest.Config. All
// fields are safe for concurrent use.
type Clients struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Istio   istioclient.Interface
	Gateway gatewayclient.Interface
	APIExt  apiextclient.Interface
}

// RESTConfig loads a client configuration: the kubeconfig file when path is
// set, otherwise $KUBECONFIG, otherwise the in-cluster service account.
// context selects a kubeconfig context ("" is the current one).
func RESTConfig(path, context string) (*rest.Config, error) {
	if path == "" && os.Getenv("KUBECONFIG") == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// NewClients builds every clientset from cfg. userAgent names the caller in
// the API server's logs and audit (for example "zmesh-controller").
func NewClients(cfg *rest.Config, userAgent string) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	if userAgent != "" {
		cfg.UserAgent = userAgent
	}
	if cfg.QPS == 0 {
		cfg.QPS = 100
		cfg.Burst = 200
	}
	c := &Clients{Config: cfg}
	var err error
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.Istio, err = istioclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("istio client: %w", err)
	}
	if c.Gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("gateway API client: %w", err)
	}
	if c.APIExt, err = apiextclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("apiextensions client: %w", err)
	}
	return c, nil
}
