package kubesource

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
)

// servedKinds splits ks into the kinds the API server serves and the custom
// resource kinds it does not. Built-in kinds are assumed served. It fails
// only when discovery itself fails for a reason other than an unknown group
// version.
func servedKinds(disc discovery.DiscoveryInterface, ks []kind) (served, missing []kind, err error) {
	resources := map[string]map[string]bool{} // group version -> served resources; nil = not served
	for _, k := range ks {
		if !k.crd {
			served = append(served, k)
			continue
		}
		gv := k.gvr.GroupVersion().String()
		names, seen := resources[gv]
		if !seen {
			list, err := disc.ServerResourcesForGroupVersion(gv)
			switch {
			case apierrors.IsNotFound(err):
				names = nil
			case err != nil:
				return nil, nil, fmt.Errorf("discovery of %s: %w", gv, err)
			default:
				names = map[string]bool{}
				for _, r := range list.APIResources {
					names[r.Name] = true
				}
			}
			resources[gv] = names
		}
		if names[k.gvr.Resource] {
			served = append(served, k)
		} else {
			missing = append(missing, k)
		}
	}
	return served, missing, nil
}
