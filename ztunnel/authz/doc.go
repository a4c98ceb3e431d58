// Package authz is ztunnel's L4 authorization: it decides whether an
// inbound connection may reach a workload under the Authorization policies
// of the state, and re-checks live connections when those policies change.
//
// Semantics (Istio's, see compat.md): the policies that apply to a
// destination workload are every GLOBAL policy, every NAMESPACE policy of
// the workload's namespace and every policy the workload lists in
// authorization_policies (unknown names are ignored). Any matching DENY
// denies; with no ALLOW policy the connection is allowed; otherwise some
// ALLOW must match. A policy matches when one of its groups matches; a group
// when all of its rules match; a rule when one of its matches holds; a
// match when every condition it sets holds. Conditions that are not set do
// not constrain, so an empty group, rule or match matches everything, while
// a policy without groups matches nothing (an ALLOW without groups allows
// nothing). Divergence from Istio's ztunnel: it skips an empty Match
// (match-none), so a DENY whose rule only had HTTP attributes is a no-op
// there; here it denies, which is what controller/index intends ("DENY
// rules are enforced without them"). Also unlike Istio, an absent identity
// satisfies no string match at all (Istio lets exact ""/prefix "" match an
// empty namespace). Dry-run policies are evaluated and reported in
// Verdict.DryRun, never enforced.
//
// Policies are compiled once per policy version into matchers with
// precomputed prefixes and port sets; Evaluate does not allocate.
package authz
