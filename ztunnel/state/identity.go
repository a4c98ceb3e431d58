package state

import (
	"strings"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// DefaultServiceAccount is the service account of a workload that names none.
const DefaultServiceAccount = workloadapi.DefaultServiceAccount

// Identity returns the SPIFFE ID of a workload,
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, with an empty
// trust domain read as cluster.local and an empty service account as
// "default" (Istio's defaults). It does not validate the parts; workloads
// accepted by the State always give a valid ID. It allocates; the State
// precomputes identities for lookups (Target.Identities,
// Upstream.Identities).
func Identity(w *workloadapi.Workload) string {
	td, sa := workloadapi.IdentityDefaults(w)
	var b strings.Builder
	b.Grow(len("spiffe:///ns//sa/") + len(td) + len(w.GetNamespace()) + len(sa))
	b.WriteString("spiffe://")
	b.WriteString(td)
	b.WriteString("/ns/")
	b.WriteString(w.GetNamespace())
	b.WriteString("/sa/")
	b.WriteString(sa)
	return b.String()
}

// ExpectedIdentities returns the identities a client accepts from endpoint w
// of service svc (svc may be nil for a workload addressed directly): the
// workload's own identity followed by the service's subject_alt_names that
// differ from it, in order. It allocates; Upstream.Identities holds the
// same list precomputed.
func ExpectedIdentities(svc *workloadapi.Service, w *workloadapi.Workload) []string {
	id := Identity(w)
	res := make([]string, 0, 1+len(svc.GetSubjectAltNames()))
	res = append(res, id)
	for _, san := range svc.GetSubjectAltNames() {
		if san == "" || containsString(res, san) {
			continue
		}
		res = append(res, san)
	}
	return res
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
