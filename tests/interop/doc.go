// Package interop checks zmesh's wire formats against Istio's own Go
// packages. It is a separate module so that the main module never imports
// istio.io/istio. Both sets of generated types register the same protobuf
// names, so the tests run with GOLANG_PROTOBUF_REGISTRATION_CONFLICT=warn
// (the Makefile's interop target sets it).
package interop
