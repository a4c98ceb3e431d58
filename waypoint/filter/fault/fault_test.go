package fault

import (
	"testing"
	"time"

	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestPerMillion(t *testing.T) {
	for _, tc := range []struct {
		p    *typev3.FractionalPercent
		want uint32
	}{
		{nil, 1_000_000},
		{&typev3.FractionalPercent{Numerator: 50}, 500_000},
		{&typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND}, 500},
		{&typev3.FractionalPercent{Numerator: 7, Denominator: typev3.FractionalPercent_MILLION}, 7},
		{&typev3.FractionalPercent{Numerator: 500}, 1_000_000},
	} {
		if got, err := PerMillion(tc.p); err != nil || got != tc.want {
			t.Errorf("PerMillion(%v) = %d, %v; want %d", tc.p, got, err, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	f, err := Compile(&faultv3.HTTPFault{
		Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Second)}, Percentage: &typev3.FractionalPercent{Numerator: 100}},
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: &typev3.FractionalPercent{Numerator: 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if d := f.Decide(); d.Delay != time.Second || d.AbortStatus != 0 {
			t.Fatalf("decision %+v", d)
		}
	}
	if _, err := Compile(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}}}); err == nil {
		t.Fatal("gRPC aborts must be rejected")
	}
	if _, err := Compile(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 99}}}); err == nil {
		t.Fatal("status 99 must be rejected")
	}
}
