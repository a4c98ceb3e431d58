# zmesh controller image. Build from the repository root:
#   docker build -f docker/controller.Dockerfile -t $HUB/controller:$TAG .
# (hack/build-images.sh builds every image.)
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/controller ./controller/cmd/controller

FROM ${BASE_IMAGE}
COPY --from=build /out/controller /usr/local/bin/controller
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/controller"]
