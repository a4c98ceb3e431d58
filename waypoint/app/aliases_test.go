package app_test

import (
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type (
	protoMessage        = proto.Message
	protoreflectMessage = protoreflect.Message
	wrapperspbBool      = wrapperspb.BoolValue
)

func newBool(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

type hcmHTTPFilter = hcmv3.HttpFilter

type matcherv3RegexMatcher = matcherv3.RegexMatcher
