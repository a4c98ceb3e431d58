# zmesh node agent image: zmesh-nodeagent plus the zmesh-cni plugin binary it
# installs into the host's CNI bin directory. Build from the repository root:
#   docker build -f docker/zmesh-nodeagent.Dockerfile -t $HUB/zmesh-nodeagent:$TAG .
# (hack/build-images.sh builds every image.) Debian slim: the agent programs
# iptables (nft and legacy backends) inside pods' network namespaces.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ ./ztunnel/cmd/zmesh-nodeagent ./ztunnel/cmd/zmesh-cni

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates iproute2 iptables nftables \
 && rm -rf /var/lib/apt/lists/*
# The agent copies zmesh-cni from beside its own binary into the host's CNI
# bin directory (mounted at /host/opt/cni/bin).
COPY --from=build /out/zmesh-nodeagent /out/zmesh-cni /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/zmesh-nodeagent"]
