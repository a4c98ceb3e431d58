module github.com/zmesh/zmesh/tests/interop

go 1.26.0

require (
	github.com/zmesh/zmesh v0.0.0
	google.golang.org/protobuf v1.36.12
	istio.io/istio v0.0.0-20260827124520-eed52ebb66ad
)

require (
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/planetscale/vtprotobuf v0.6.1-0.20240409071808-615f978279ca // indirect
	github.com/spiffe/go-spiffe/v2 v2.9.0 // indirect
)

replace github.com/zmesh/zmesh => ../..

// Istio's pinned istio.io/api pseudo-version is not served by the module proxy.
replace istio.io/api => istio.io/api v1.31.1
