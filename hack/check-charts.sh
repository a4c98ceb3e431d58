#!/bin/bash
# check-charts.sh lints and renders every chart under charts/ and validates
# the result against the real test API server:
#   1. installs the pinned helm into ~/.cache/zmesh-tools (once);
#   2. `helm lint` each chart with its default values and a non-default set;
#   3. `helm template` each chart the same two ways into the release
#      namespace (istio-system);
#   4. server-side applies charts/base/crds/ for real (dry runs of custom
#      resources need their CRDs) and creates the release namespace if
#      missing;
#   5. `kubectl apply --server-side --dry-run=server` of every rendering,
#      so the API server validates each object against its schema.
#
# Needs the test API server (hack/kube-up.sh up) and $ZMESH_TEST_KUBECONFIG
# (default ~/.cache/zmesh-kube/state/kubeconfig). kubectl comes from
# hack/kube-up.sh's build, else from PATH. Env: HELM_VERSION, NAMESPACE, KEEP_RENDERED=DIR
# (write the renderings there).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=${HELM_VERSION:-v3.19.5}
NAMESPACE=${NAMESPACE:-istio-system}
TOOLS=${TOOLS:-$HOME/.cache/zmesh-tools}
KUBE_HOME=${KUBE_HOME:-$HOME/.cache/zmesh-kube}
K8S_VERSION=${K8S_VERSION:-v1.33.13}
KUBECONFIG=${ZMESH_TEST_KUBECONFIG:-$KUBE_HOME/state/kubeconfig}
export KUBECONFIG
CHARTS=(base controller ztunnel)

log() { echo "check-charts: $*" >&2; }

# 1. helm, built from the Go module proxy (no prebuilt download here).
HELM=$TOOLS/helm-$HELM_VERSION
if [ ! -x "$HELM" ]; then
  log "installing helm $HELM_VERSION into $TOOLS (one time, about 2 minutes)"
  mkdir -p "$TOOLS"
  GOBIN=$TOOLS/bin-helm-$HELM_VERSION GOFLAGS= go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ln -sf "$TOOLS/bin-helm-$HELM_VERSION/helm" "$HELM"
fi
# Keep helm's caches and config out of the user's home directory.
helm_home=$(mktemp -d)
rendered=${KEEP_RENDERED:-$(mktemp -d)}
trap 'rm -rf "$helm_home"; [ -n "${KEEP_RENDERED:-}" ] || rm -rf "$rendered"' EXIT
mkdir -p "$rendered"
export HELM_CACHE_HOME=$helm_home/cache HELM_CONFIG_HOME=$helm_home/config HELM_DATA_HOME=$helm_home/data

# The kubectl hack/kube-up.sh builds (same version as the API server), else PATH's.
KUBECTL=$KUBE_HOME/bin/$K8S_VERSION/kubectl
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl || true)
if [ -z "$KUBECTL" ]; then
  log "no kubectl at $KUBE_HOME/bin/$K8S_VERSION or on PATH: run hack/kube-up.sh up (it builds kubectl)"; exit 1
fi
if [ ! -f "$KUBECONFIG" ]; then
  log "no test API server kubeconfig at $KUBECONFIG: run KCM=1 hack/kube-up.sh up"; exit 1
fi

# Non-default values: every optional branch of the templates renders.
values_nondefault() {
  case $1 in
    base) cat <<'EOF2'
gatewayAPI:
  installCRDs: true
gatewayClass:
  enabled: true
EOF2
    ;;
    controller) cat <<'EOF2'
global:
  hub: registry.example.com/mesh
  tag: v9.9.9
  imagePullPolicy: Always
  imagePullSecrets: [regcred]
meshConfig:
  trustDomain: example.org
  clusterID: east
  rootNamespace: mesh-root
  accessLogFile: /dev/stdout
controller:
  image: registry.example.com/other/controller:custom
  replicas: 3
  logLevel: debug
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}]
  podAnnotations: {example.com/note: x}
  podLabels: {team: mesh}
  podDisruptionBudget: {enabled: false}
waypoint:
  tracing: {otlpEndpoint: "http://collector.observability:4318/v1/traces", samplingPercent: 10}
EOF2
    ;;
    ztunnel) cat <<'EOF2'
global:
  hub: registry.example.com/mesh
  tag: v9.9.9
  imagePullSecrets: [regcred]
meshConfig:
  trustDomain: example.org
  clusterID: east
controller:
  address: zmesh.mesh.svc:15012
  name: zmesh.mesh.svc
runDir: /run/zmesh
ztunnel:
  image: registry.example.com/other/ztunnel:custom
  network: net1
  logLevel: debug
  podLabels: {team: mesh}
  podAnnotations: {example.com/note: x}
  nodeSelector: {kubernetes.io/os: linux}
nodeAgent:
  logLevel: debug
  cniBinDir: /usr/libexec/cni
  cniConfDir: /etc/cni/conf.d
  readyPort: 15122
  hostPID: false
  podAnnotations: {example.com/note: x}
priorityClassName: system-cluster-critical
EOF2
    ;;
  esac
}

# 2 and 3. lint and render.
for c in "${CHARTS[@]}"; do
  values_nondefault "$c" > "$rendered/$c-values.yaml"
  for variant in default nondefault; do
    args=()
    [ $variant = nondefault ] && args=(-f "$rendered/$c-values.yaml")
    log "helm lint charts/$c ($variant values)"
    "$HELM" lint --strict --namespace "$NAMESPACE" "charts/$c" "${args[@]}" >"$rendered/$c-$variant.lint" 2>&1 ||
      { cat "$rendered/$c-$variant.lint" >&2; log "helm lint charts/$c ($variant) failed"; exit 1; }
    # The base chart's class is rendered with installCRDs only when the
    # cluster serves GatewayClass: tell template it does.
    "$HELM" template "zmesh-$c" "charts/$c" --namespace "$NAMESPACE" \
      --api-versions gateway.networking.k8s.io/v1/GatewayClass "${args[@]}" > "$rendered/$c-$variant.yaml"
    n=$(grep -c '^kind: ' "$rendered/$c-$variant.yaml" || true)
    log "helm template charts/$c ($variant values): $n objects"
    [ "$n" -gt 0 ] || { log "charts/$c ($variant) rendered nothing"; exit 1; }
  done
done

# 4. CRDs for real, then the release namespace (and the one the non-default
# leader election Role goes to).
log "server-side applying charts/base/crds/ to $(grep -m1 'server:' "$KUBECONFIG" | awk '{print $2}')"
"$KUBECTL" apply --server-side --force-conflicts --field-manager=zmesh-check-charts -f charts/base/crds/ >/dev/null
"$KUBECTL" apply --server-side --force-conflicts --field-manager=zmesh-check-charts -f charts/base/files/gateway-api-crds.gen.yaml >/dev/null
"$KUBECTL" wait --for=condition=Established --timeout=60s -f charts/base/crds/ -f charts/base/files/gateway-api-crds.gen.yaml >/dev/null
for ns in "$NAMESPACE"; do
  "$KUBECTL" get namespace "$ns" >/dev/null 2>&1 || "$KUBECTL" create namespace "$ns" >/dev/null
done

# 5. Server-side dry run of every rendering.
fail=0
for c in "${CHARTS[@]}"; do
  for variant in default nondefault; do
    if out=$("$KUBECTL" apply --server-side --force-conflicts --dry-run=server --field-manager=zmesh-check-charts \
               -f "$rendered/$c-$variant.yaml" 2>&1); then
      log "kubectl apply --dry-run=server charts/$c ($variant values): $(grep -c . <<<"$out") objects accepted"
    else
      echo "$out" >&2
      log "kubectl apply --dry-run=server charts/$c ($variant values) FAILED"
      fail=1
    fi
  done
done
[ $fail = 0 ] || exit 1
log "all charts lint, render and validate"
