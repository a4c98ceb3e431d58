package ca

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/pkg/spiffe"
)

// NodeWorkloads answers whether a pod using a service account runs on a
// node. The controller's workload index implements it; it must be safe for
// concurrent use.
type NodeWorkloads interface {
	// HasWorkload reports whether at least one pod in namespace with
	// serviceAccount is scheduled on node.
	HasWorkload(node, namespace, serviceAccount string) bool
}

// nodeAuthorizer decides whether a node proxy may obtain a certificate for
// another identity (Kubernetes node authorization, narrowed to the CA).
type nodeAuthorizer struct {
	td        spiffeid.TrustDomain
	trusted   []spiffeid.ID
	workloads NodeWorkloads
}

// authorize returns the identity to issue when caller asks to impersonate
// requested, or an error saying why not (for logs only).
func (n *nodeAuthorizer) authorize(caller auth.Caller, callerID spiffeid.ID, requested string) (spiffeid.ID, error) {
	if !slices.Contains(n.trusted, callerID) {
		return spiffeid.ID{}, fmt.Errorf("caller %q is not a trusted node identity", callerID)
	}
	if caller.Node == "" {
		return spiffeid.ID{}, errors.New("caller's node is unknown")
	}
	if n.workloads == nil {
		return spiffeid.ID{}, errors.New("no node workload index configured")
	}
	ident, err := spiffe.ParseIdentity(requested)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("impersonated identity: %w", err)
	}
	if ident.TrustDomain != n.td {
		return spiffeid.ID{}, fmt.Errorf("impersonated identity %q is outside trust domain %q", requested, n.td)
	}
	if !n.workloads.HasWorkload(caller.Node, ident.Namespace, ident.ServiceAccount) {
		return spiffeid.ID{}, fmt.Errorf("no pod of %s/%s on node %q", ident.Namespace, ident.ServiceAccount, caller.Node)
	}
	return ident.ID(), nil
}
