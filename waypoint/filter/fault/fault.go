// Package fault compiles Envoy's HTTP fault filter configuration (fixed
// delay and HTTP abort, each with a percentage) and decides, per request,
// which faults to inject.
package fault

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// FilterName is the filter's name in http_filters and typed_per_filter_config.
const FilterName = "envoy.filters.http.fault"

// Fault is a compiled HTTPFault. Percentages are parts per million.
type Fault struct {
	Delay       time.Duration
	DelayPPM    uint32
	AbortStatus int
	AbortPPM    uint32
	AbortBody   string
	hasDelay    bool
	hasAbort    bool
}

// Compile validates and compiles f. Header-controlled delays and aborts,
// gRPC aborts and rate limits are rejected: they are not supported.
func Compile(f *faultv3.HTTPFault) (*Fault, error) {
	out := &Fault{}
	if d := f.GetDelay(); d != nil {
		if d.GetFixedDelay() == nil {
			return nil, errors.New("fault: only fixed_delay is supported")
		}
		if err := d.GetFixedDelay().CheckValid(); err != nil {
			return nil, fmt.Errorf("fault: fixed_delay: %w", err)
		}
		out.Delay = d.GetFixedDelay().AsDuration()
		if out.Delay < 0 {
			return nil, errors.New("fault: negative fixed_delay")
		}
		ppm, err := PerMillion(d.GetPercentage())
		if err != nil {
			return nil, fmt.Errorf("fault: delay: %w", err)
		}
		out.DelayPPM, out.hasDelay = ppm, true
	}
	if a := f.GetAbort(); a != nil {
		st, ok := a.GetErrorType().(*faultv3.FaultAbort_HttpStatus)
		if !ok {
			return nil, errors.New("fault: only http_status aborts are supported")
		}
		if st.HttpStatus < 200 || st.HttpStatus > 599 {
			return nil, fmt.Errorf("fault: abort http_status %d out of range", st.HttpStatus)
		}
		ppm, err := PerMillion(a.GetPercentage())
		if err != nil {
			return nil, fmt.Errorf("fault: abort: %w", err)
		}
		out.AbortStatus, out.AbortPPM, out.hasAbort = int(st.HttpStatus), ppm, true
		out.AbortBody = "fault filter abort"
		if b := f.GetAbort().GetResponseBody(); b != "" {
			out.AbortBody = b
		}
	}
	if f.GetResponseRateLimit() != nil {
		return nil, errors.New("fault: response_rate_limit is not supported")
	}
	return out, nil
}

// PerMillion converts a FractionalPercent to parts per million; nil means
// 100% as in Envoy's fault filter.
func PerMillion(p *typev3.FractionalPercent) (uint32, error) {
	if p == nil {
		return 1_000_000, nil
	}
	n := uint64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	case typev3.FractionalPercent_MILLION:
	default:
		return 0, fmt.Errorf("unknown denominator %v", p.GetDenominator())
	}
	return uint32(min(n, 1_000_000)), nil
}

// Hit reports whether an event with probability ppm/1e6 happens now.
func Hit(ppm uint32) bool {
	return ppm >= 1_000_000 || (ppm > 0 && rand.Uint32N(1_000_000) < ppm)
}

// Decision is what to inject into one request.
type Decision struct {
	Delay       time.Duration // 0: none
	AbortStatus int           // 0: none
	AbortBody   string
}

// Decide draws this request's faults.
func (f *Fault) Decide() Decision {
	var d Decision
	if f == nil {
		return d
	}
	if f.hasDelay && Hit(f.DelayPPM) {
		d.Delay = f.Delay
	}
	if f.hasAbort && Hit(f.AbortPPM) {
		d.AbortStatus, d.AbortBody = f.AbortStatus, f.AbortBody
	}
	return d
}
