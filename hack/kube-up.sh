#!/bin/bash
# kube-up.sh - a real Kubernetes control plane on 127.0.0.1 for tests: etcd + kube-apiserver
# (+ optional kube-controller-manager). No kubelet, no scheduler: pods are plain API objects
# (bind them with pods/binding, patch their status yourself, or let a test harness act as kubelet).
#
#   kube-up.sh up      # install etcd if missing, build kube-apiserver (cached), certs, start, wait for /readyz
#   kube-up.sh down    # stop everything it started (by PID files) and wipe state
#   kube-up.sh env     # print `export KUBECONFIG=...`
#   kube-up.sh build   # only build the binaries into $KUBE_HOME/bin/$K8S_VERSION/
#
# Building kube-apiserver from the Go module proxy takes about 5 minutes on 2 cores the first time,
# then seconds (binaries are cached in $KUBE_HOME/bin). The Go module proxy here serves only some
# versions: v1.33.13 builds apiserver and controller-manager; v1.32.13 builds the apiserver only.
# `go list -m -versions MODULE` shows which versions of a module can be fetched.
#
# Env knobs:
#   KUBE_HOME     (default $HOME/.cache/zmesh-kube)  binaries, build modules, state
#   K8S_VERSION   (default v1.33.13)
#   ETCD_BIN      (default /usr/bin/etcd from Debian's etcd-server 3.4, installed if missing)
#   STATE         (default $KUBE_HOME/state)  certs, kubeconfig, logs, pids
#   ETCD_DATA     (default /dev/shm/zmesh-kube-etcd)  tmpfs: no fsync cost
#   API_PORT      (default 16443)   ETCD_PORT (default 12379)  ETCD_PEER_PORT (default 12380)
#   AUTHZ         (default RBAC; AlwaysAllow also works)
#   KCM           (default 0) 1 = also build and run kube-controller-manager (EndpointSlices, Deployments ->
#                 ReplicaSets -> Pods, namespace deletion, `default` ServiceAccounts, root CA ConfigMap, GC).
#                 EndpointSlices need a Node object to exist. Pods bound to a node need force-deletion (no kubelet).
#   SA_ADMISSION  (default off) "on" keeps the ServiceAccount admission plugin (then each namespace needs
#                 its `default` ServiceAccount: KCM=1 creates them)
# Tokens: tokens.csv in $STATE/pki holds static bearer tokens (admin-token: system:masters;
# mesh-token: user mesh-controller in group mesh). `kubectl create token SA` issues real SA tokens.
# Note: TPROXY over a bridge in a network namespace needs net.bridge.bridge-nf-call-iptables=0 there.
# (zmesh copy of ../shared/tools/kube-up.sh: also builds kubectl into $BIN and puts $BIN first on PATH;
#  `up` is a no-op when its processes are already running, and otherwise starts from a clean state.)
set -euo pipefail

KUBE_HOME=${KUBE_HOME:-$HOME/.cache/zmesh-kube}
K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
STATE=${STATE:-$KUBE_HOME/state}
ETCD_DATA=${ETCD_DATA:-/dev/shm/zmesh-kube-etcd}
API_PORT=${API_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
AUTHZ=${AUTHZ:-RBAC}
SA_ADMISSION=${SA_ADMISSION:-off}
KCM=${KCM:-0}
BIN=$KUBE_HOME/bin/$K8S_VERSION
APISERVER_BIN=$BIN/kube-apiserver
KCM_BIN=$BIN/kube-controller-manager
KUBECTL_BIN=$BIN/kubectl
export PATH=$BIN:$PATH

log() { echo "[$(date +%T.%3N)] $*" >&2; }

# One kube-up at a time per KUBE_HOME (tests of several packages may call it together).
if [ -z "${KUBE_UP_LOCKED:-}" ]; then
  mkdir -p "$KUBE_HOME"
  export KUBE_UP_LOCKED=1
  exec flock -o "$KUBE_HOME/.lock" "$0" "$@"
fi

build_k8s() {
  local cmds=()
  [ -x "$APISERVER_BIN" ] || cmds+=(k8s.io/kubernetes/cmd/kube-apiserver)
  [ "$KCM" = 1 ] && { [ -x "$KCM_BIN" ] || cmds+=(k8s.io/kubernetes/cmd/kube-controller-manager); }
  [ -x "$KUBECTL_BIN" ] || cmds+=(k8s.io/kubernetes/cmd/kubectl)
  [ ${#cmds[@]} = 0 ] && return 0
  local kv=$K8S_VERSION sv="v0.${K8S_VERSION#v1.}" dir=$KUBE_HOME/build/k8s-$K8S_VERSION
  log "building ${cmds[*]##*/} $kv in $dir (staging modules $sv)"
  mkdir -p "$dir" "$BIN"
  (
    cd "$dir"
    go mod download -json "k8s.io/kubernetes@$kv" >/dev/null
    local modfile; modfile=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$kv.mod
    local staging; staging=$(grep -oE 'k8s.io/[a-z0-9-]+ => \./staging' "$modfile" | awk '{print $1}')
    {
      echo "module kbuild"; echo
      echo "go $(awk '/^go /{print $2}' "$modfile")"; echo
      grep -E '^godebug' "$modfile" || true; echo
      echo "require k8s.io/kubernetes $kv"; echo
      echo "replace ("
      for m in $staging; do echo "	$m => $m $sv"; done
      echo ")"
    } > go.mod
    local minor=${kv#v1.}; minor=${minor%%.*}
    go build -mod=mod -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$kv \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$BIN/" "${cmds[@]}"
  )
}

gen_certs() {
  local d=$STATE/pki
  [ -f "$d/admin.crt" ] && return 0
  mkdir -p "$d"; cd "$d"
  log "generating CA, serving cert, admin client cert, SA keys"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=zmesh-test-ca" 2>/dev/null
  # apiserver serving cert
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout apiserver.key \
    -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  # admin client cert (O=system:masters => cluster-admin under RBAC)
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout admin.key \
    -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile client.ext -out admin.crt 2>/dev/null
  # service-account signing key pair
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  # static bearer tokens (alternative to client certs): token,user,uid,"group1,group2"
  echo "admin-token,admin,admin,\"system:masters\"" > tokens.csv
  echo "mesh-token,mesh-controller,mesh-controller,\"mesh\"" >> tokens.csv
  cd - >/dev/null
}

write_kubeconfig() {
  local d=$STATE/pki
  cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $d/ca.crt
users:
- name: admin
  user:
    client-certificate: $d/admin.crt
    client-key: $d/admin.key
- name: token
  user:
    token: admin-token
contexts:
- name: local
  context: {cluster: local, user: admin}
- name: token
  context: {cluster: local, user: token}
current-context: local
EOF
}

start_etcd() {
  if [ ! -x "$ETCD_BIN" ]; then
    log "installing etcd-server from Debian"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null
    # the package may start a system etcd on 2379; this script uses its own ports and data dir
  fi
  mkdir -p "$ETCD_DATA" "$STATE"
  log "starting $($ETCD_BIN --version | head -1) on 127.0.0.1:$ETCD_PORT (data $ETCD_DATA)"
  setsid "$ETCD_BIN" --name kube --data-dir "$ETCD_DATA" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kube=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn --logger zap \
    > "$STATE/etcd.log" 2>&1 < /dev/null &
  echo $! > "$STATE/etcd.pid"
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null && { log "etcd healthy"; return 0; }
    sleep 0.1
  done
  log "etcd did not become healthy"; tail -20 "$STATE/etcd.log"; return 1
}

start_apiserver() {
  local d=$STATE/pki
  local extra=()
  [ "$SA_ADMISSION" = "on" ] || extra+=(--disable-admission-plugins=ServiceAccount)
  log "starting kube-apiserver $K8S_VERSION on https://127.0.0.1:$API_PORT"
  setsid "$APISERVER_BIN" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --client-ca-file="$d/ca.crt" --token-auth-file="$d/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --authorization-mode="$AUTHZ" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true --profiling=false --endpoint-reconciler-type=none \
    "${extra[@]}" \
    > "$STATE/apiserver.log" 2>&1 < /dev/null &
  echo $! > "$STATE/apiserver.pid"
  for _ in $(seq 1 600); do
    if curl -sf --cacert "$d/ca.crt" --cert "$d/admin.crt" --key "$d/admin.key" \
         "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
      log "kube-apiserver ready"; return 0
    fi
    kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null || { log "apiserver died"; tail -30 "$STATE/apiserver.log"; return 1; }
    sleep 0.1
  done
  log "apiserver not ready after 60s"; tail -30 "$STATE/apiserver.log"; return 1
}

start_kcm() {
  [ "$KCM" = 1 ] || return 0
  local d=$STATE/pki
  log "starting kube-controller-manager $K8S_VERSION"
  # nodelifecycle off: there is no kubelet, so Nodes would go NotReady and pods get evicted after 5m.
  setsid "$KCM_BIN" --kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --controllers='*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
    --use-service-account-credentials=false \
    --concurrent-service-endpoint-syncs=5 --endpointslice-updates-batch-period=0s \
    > "$STATE/kcm.log" 2>&1 < /dev/null &
  echo $! > "$STATE/kcm.pid"
  for _ in $(seq 1 200); do
    kubectl --kubeconfig "$STATE/kubeconfig" -n default get sa default >/dev/null 2>&1 && { log "kube-controller-manager running (default SA exists)"; return 0; }
    kill -0 "$(cat "$STATE/kcm.pid")" 2>/dev/null || { log "kcm died"; tail -30 "$STATE/kcm.log"; return 1; }
    sleep 0.1
  done
  log "kcm: default SA not created after 20s"; tail -20 "$STATE/kcm.log"; return 1
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
}

case "${1:-up}" in
  up)
    if [ -f "$STATE/apiserver.pid" ] && kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null \
       && { [ "$KCM" != 1 ] || { [ -f "$STATE/kcm.pid" ] && kill -0 "$(cat "$STATE/kcm.pid")" 2>/dev/null; }; }; then
      log "already running"; echo "export KUBECONFIG=$STATE/kubeconfig"; exit 0
    fi
    "$0" down
    t0=$(date +%s.%N)
    build_k8s
    t1=$(date +%s.%N)
    gen_certs; write_kubeconfig
    start_etcd
    start_apiserver
    start_kcm
    t2=$(date +%s.%N)
    log "build/check: $(awk "BEGIN{print $t1-$t0}")s, certs+etcd+apiserver ready: $(awk "BEGIN{print $t2-$t1}")s, total $(awk "BEGIN{print $t2-$t0}")s"
    echo "export KUBECONFIG=$STATE/kubeconfig"
    ;;
  build) build_k8s ;;
  down)
    stop_pidfile "$STATE/kcm.pid"
    stop_pidfile "$STATE/apiserver.pid"
    stop_pidfile "$STATE/etcd.pid"
    rm -rf "$ETCD_DATA" "$STATE"
    log "stopped and wiped"
    ;;
  env) echo "export KUBECONFIG=$STATE/kubeconfig" ;;
  *) echo "usage: $0 up|down|env|build" >&2; exit 2 ;;
esac
