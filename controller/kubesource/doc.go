// Package kubesource is the controller's Kubernetes source: it follows the
// objects the index reads with client-go shared informers and delivers
// complete snapshots of them as index.Inputs, like controller/configdir does
// for a directory of manifests.
//
// Start lists every kind, waits for the caches to sync and delivers the first
// snapshot before it returns. Afterwards each burst of watch events is
// coalesced (a short quiet period, bounded by a maximum delay) into one fresh
// snapshot assembled from the informer caches. Snapshots hold the cached
// objects themselves: receivers must treat them as read-only.
//
// Custom resource kinds whose CRDs the API server does not serve (a cluster
// without the Gateway API, say) are skipped with a warning instead of
// blocking Start. Installing such a CRD later takes a restart to be noticed.
//
// To keep memory low, cached objects are trimmed on the way in: managedFields
// and the kubectl last-applied annotation are dropped from every object, and
// Pods keep only the fields listed at trimPod.
package kubesource
