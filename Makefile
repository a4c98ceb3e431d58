# zmesh build, test and tooling. Every target installs what it needs.
#
#   make build     binaries into bin/
#   make test      gofmt, go vet, golangci-lint, generated-code and CRD checks, Helm
#                  chart lint/render/server dry run, unit and
#                  integration tests with -race, and the interop wire check
#   make generate  regenerate protobuf Go code with the pinned generators
#   make bench     benchmarks (numbers, not pass/fail)
#   make demo      run a demo mesh on this machine

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
export GOFLAGS ?= -buildvcs=false

# Pinned tool versions. Tools live outside the work tree, keyed by version,
# so clean clones on one machine share them.
GOLANGCI_LINT_VERSION := v2.15.0
PROTOC_GEN_GO_VERSION := v1.36.11
PROTOC_VERSION := 3.21.12
TOOLS := $(HOME)/.cache/zmesh-tools
# The test API server (hack/kube-up.sh): etcd, kube-apiserver and
# kube-controller-manager on 127.0.0.1, binaries cached under KUBE_HOME.
export KUBE_HOME ?= $(HOME)/.cache/zmesh-kube
TEST_KUBECONFIG := $(KUBE_HOME)/state/kubeconfig
GOLANGCI_LINT := $(TOOLS)/golangci-lint-$(GOLANGCI_LINT_VERSION)
PROTOC_GEN_GO := $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)

PROTOS := pkg/workloadapi/workload.proto pkg/workloadapi/security/authorization.proto pkg/zdsapi/zds.proto
BINARIES := controller/cmd/controller controller/cmd/zmeshctl ztunnel/cmd/ztunnel ztunnel/cmd/zmesh-cni ztunnel/cmd/zmesh-nodeagent waypoint/cmd/waypoint tests/e2e/cmd/echo
HELM_VERSION := v3.19.5
HUB ?= zmesh
TAG ?= dev

.PHONY: all build test packages check-fmt vet lint generate check-generate unit interop bench demo tools clean kube-up kube-down check-crds images charts

all: build

build:
	@mkdir -p bin
	$(GO) build -o bin/ $(addprefix ./,$(BINARIES))

test: packages check-fmt vet lint check-generate check-crds kube-up charts unit interop

# One image per binary from docker/<name>.Dockerfile; needs docker or podman
# (DRY_RUN=1 only prints the commands).
images:
	HUB=$(HUB) TAG=$(TAG) ./hack/build-images.sh

# helm lint, helm template (default and non-default values), and a
# server-side dry run of every rendering against the test API server.
charts: kube-up
	ZMESH_TEST_KUBECONFIG=$(TEST_KUBECONFIG) HELM_VERSION=$(HELM_VERSION) ./hack/check-charts.sh

# Starts the test API server unless it is already running (first run builds
# kube-apiserver, kube-controller-manager and kubectl: about 8 minutes).
kube-up:
	KCM=1 ./hack/kube-up.sh up

kube-down:
	./hack/kube-up.sh down

# Debian packages the tests need (iproute2, iptables, nftables).
packages:
	@./hack/ensure-packages.sh

check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

# Tests that need the API server fail rather than skip here.
unit:
	ZMESH_TEST_KUBECONFIG=$(TEST_KUBECONFIG) ZMESH_REQUIRE_KUBE=1 $(GO) test -race -count=1 ./...

# The CRDs in charts/base must match the pinned istio.io/api and gateway-api.
check-crds:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; ./hack/update-crds.sh $$tmp; \
	diff -q $$tmp/crds/istio.gen.yaml charts/base/crds/istio.gen.yaml && \
	diff -q $$tmp/files/gateway-api-crds.gen.yaml charts/base/files/gateway-api-crds.gen.yaml

interop:
	cd tests/interop && GOLANG_PROTOBUF_REGISTRATION_CONFLICT=warn $(GO) test -race -count=1 ./...

# Benchmarks print numbers; targets are in the issues and compared by hand.
# The data-plane bench (needs root) runs bin/ztunnel on two simulated nodes
# and installs iperf3, fortio, ghostunnel and nginx (with its stream module,
# for the two-nginx-mTLS-hops reference) when missing. It runs with the
# test control plane stopped: idle, the API server, etcd and controller
# manager still take about 3% of a CPU in frequent wake-ups, which shows in
# the latency tails. The next kube-up starts them again.
bench: packages build kube-up
	@echo "== index: full build, 10,000 pods / 1,000 services (target <= 1 s, <= 300 MB), and a one-pod change through index.Builder"
	$(GO) test -run '^$$' -bench 'BenchmarkBuild$$|BenchmarkBuilderPodChange' -benchmem ./controller/index/
	@echo "== publish: one-pod change -> index, allow-from-waypoint, L7, xDS diff (10,000 pods, no clients)"
	$(GO) test -run '^$$' -bench 'BenchmarkPublishPodChange' -benchmem ./controller/publish/
	@echo "== xDS: one resource change reaching 100 clients, 10,000 resources (target <= 100 ms)"
	$(GO) test -run '^$$' -bench 'BenchmarkPodChangeFanout|BenchmarkUpdate10k' -benchtime 100x -benchmem ./controller/xdsserver/
	@echo "== controller end to end: one pod change -> publish -> 100 clients"
	$(GO) test -run '^$$' -bench 'BenchmarkPodChangeEndToEnd' -benchtime 50x -benchmem ./controller/app/
	@echo "== Kubernetes: 10,000 pods / 1,000 services through the API server; pod status change -> client xDS update (targets p99 <= 200 ms, RSS <= 500 MB)"
	ZMESH_TEST_KUBECONFIG=$(TEST_KUBECONFIG) $(GO) test -run '^$$' -bench 'BenchmarkPodStatusToXDS' -benchtime 100x -timeout 30m ./controller/kubesource/
	@echo "== data plane: pod -> pod direct vs through ztunnel (targets: added p99 <= 0.3 ms, >= 5 Gbit/s and >= 0.8x ghostunnel, <= 0.1 vCPU per 1000 req/s, <= 10 KB per idle connection)"
	./hack/kube-up.sh down
	$(GO) run ./tests/bench -ztunnel bin/ztunnel -echo bin/echo $(BENCH_FLAGS)

generate: $(PROTOC_GEN_GO)
	@./hack/ensure-protoc.sh $(PROTOC_VERSION)
	PATH=$(TOOLS)/bin-protoc-gen-go-$(PROTOC_GEN_GO_VERSION):$$PATH \
	  protoc -I pkg --go_out=pkg --go_opt=module=github.com/zmesh/zmesh/pkg $(PROTOS)

# Regenerates into a scratch tree and fails if the committed code differs.
check-generate: $(PROTOC_GEN_GO)
	@./hack/ensure-protoc.sh $(PROTOC_VERSION)
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(TOOLS)/bin-protoc-gen-go-$(PROTOC_GEN_GO_VERSION):$$PATH \
	  protoc -I pkg --go_out=$$tmp --go_opt=module=github.com/zmesh/zmesh/pkg $(PROTOS); \
	for f in $(PROTOS:.proto=.pb.go); do \
	  if ! diff -q $$tmp/$${f#pkg/} $$f >/dev/null; then echo "$$f is stale: run 'make generate'"; exit 1; fi; \
	done; echo "generated code is up to date"

tools: $(GOLANGCI_LINT) $(PROTOC_GEN_GO)

$(GOLANGCI_LINT):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS)/bin-golangci-lint-$(GOLANGCI_LINT_VERSION) GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	ln -sf $(TOOLS)/bin-golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint $@

$(PROTOC_GEN_GO):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS)/bin-protoc-gen-go-$(PROTOC_GEN_GO_VERSION) GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	ln -sf $(TOOLS)/bin-protoc-gen-go-$(PROTOC_GEN_GO_VERSION)/protoc-gen-go $@

clean:
	rm -rf bin

# The demo: a two-node mesh in network namespaces (needs root), driven
# through the examples in examples/demo. KEEP=1 leaves it running.
demo: packages
	@mkdir -p bin
	$(GO) build -o bin/ ./tests/e2e/cmd/echo ./waypoint/cmd/waypoint
	$(GO) run ./tests/demo -echo bin/echo -waypoint bin/waypoint -examples examples $(if $(KEEP),-keep)
