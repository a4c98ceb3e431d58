// Package kubetest connects tests to the real API server that `make test`
// starts with hack/kube-up.sh (etcd, kube-apiserver, kube-controller-manager
// on 127.0.0.1).
//
// Tests find it through $ZMESH_TEST_KUBECONFIG. Without it they skip with a
// message saying how to get one, unless $ZMESH_REQUIRE_KUBE=1 (set by the
// Makefile), which turns the skip into a failure so CI always runs them.
//
// Every test package shares the one API server: tests isolate themselves in
// namespaces from Namespace and name cluster-scoped objects uniquely.
package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/pkg/kube"
)

// EnvKubeconfig names the kubeconfig of the test API server.
const EnvKubeconfig = "ZMESH_TEST_KUBECONFIG"

// EnvRequire makes a missing API server a failure instead of a skip.
const EnvRequire = "ZMESH_REQUIRE_KUBE"

var (
	crdOnce sync.Once
	crdErr  error
)

// Kubeconfig returns the test API server's kubeconfig path, or skips (fails
// under $ZMESH_REQUIRE_KUBE=1) when there is none.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		msg := "no test API server: run `make test`, or `KCM=1 hack/kube-up.sh up` and export " +
			EnvKubeconfig + "=$HOME/.cache/zmesh-kube/state/kubeconfig"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Clients returns clients (as cluster admin) for the test API server, with
// zmesh's CRDs (Istio security/networking, Gateway API) installed.
func Clients(t testing.TB) *kube.Clients {
	t.Helper()
	path := Kubeconfig(t)
	cfg, err := kube.RESTConfig(path, "")
	if err != nil {
		t.Fatalf("test API server: %v", err)
	}
	c, err := kube.NewClients(cfg, "zmesh-test")
	if err != nil {
		t.Fatalf("test API server: %v", err)
	}
	crdOnce.Do(func() { crdErr = InstallCRDs(context.Background(), c) })
	if crdErr != nil {
		t.Fatalf("installing CRDs: %v", crdErr)
	}
	return c
}

// RepoRoot is the zmesh checkout this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// CRDFiles are the CRD manifests the tests install, relative to RepoRoot.
var CRDFiles = []string{"charts/base/crds/istio.gen.yaml", "charts/base/files/gateway-api-crds.gen.yaml"}

// InstallCRDs server-side-applies zmesh's CRDs and waits until the API
// server serves them. It is idempotent and safe to run from several test
// processes at once.
func InstallCRDs(ctx context.Context, c *kube.Clients) error {
	var names []string
	for _, f := range CRDFiles {
		data, err := os.ReadFile(filepath.Join(RepoRoot(), f))
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var crd apiextv1.CustomResourceDefinition
			if err := dec.Decode(&crd); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if crd.Name == "" {
				continue
			}
			crd.APIVersion, crd.Kind = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
			crd.ManagedFields = nil
			body, err := yaml.Marshal(&crd)
			if err != nil {
				return err
			}
			force := true
			_, err = c.APIExt.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, crd.Name,
				types.ApplyYAMLPatchType, body, metav1.PatchOptions{FieldManager: "zmesh-test", Force: &force})
			if err != nil {
				return fmt.Errorf("apply CRD %s: %w", crd.Name, err)
			}
			names = append(names, crd.Name)
		}
	}
	for _, n := range names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			crd, err := c.APIExt.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // retried until the timeout
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", n, err)
		}
	}
	return nil
}

// Namespace creates a namespace named after prefix with a random suffix and
// the given labels, and deletes it when the test ends.
func Namespace(t testing.TB, c *kube.Clients, prefix string, labels map[string]string) string {
	t.Helper()
	prefix = strings.ToLower(prefix)
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	ns, err := c.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: strings.TrimSuffix(prefix, "-") + "-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ForceDeletePods(c, ns.Name)
		err := c.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// ForceDeletePods deletes every pod of namespace with grace period 0. With
// no kubelet to confirm graceful deletions, pods bound to a node would
// otherwise stay (and keep their namespace terminating) forever.
func ForceDeletePods(c *kube.Clients, namespace string) {
	zero := int64(0)
	_ = c.Kube.CoreV1().Pods(namespace).DeleteCollection(context.Background(),
		metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
}

// Eventually polls cond every 50 ms until it returns true or timeout passes,
// then fails the test with the last error cond returned.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v (last error: %v)", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
