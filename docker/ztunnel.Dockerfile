# zmesh ztunnel image (per-node L4 proxy). Build from the repository root:
#   docker build -f docker/ztunnel.Dockerfile -t $HUB/ztunnel:$TAG .
# (hack/build-images.sh builds every image.) Debian slim rather than
# distroless: iproute2 and iptables are there for debugging pods' network
# namespaces from the ztunnel container.
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
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ztunnel ./ztunnel/cmd/ztunnel

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates iproute2 iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ztunnel /usr/local/bin/ztunnel
# Runs as root with NET_ADMIN, SYS_ADMIN and NET_RAW (see charts/ztunnel).
ENTRYPOINT ["/usr/local/bin/ztunnel"]
