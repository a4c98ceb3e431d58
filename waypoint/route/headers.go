package route

import (
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// HeaderOps are header manipulations on the request and the response.
type HeaderOps struct {
	RequestAdd     []HeaderAdd
	RequestRemove  []string
	ResponseAdd    []HeaderAdd
	ResponseRemove []string
}

// HeaderAdd adds (Append) or sets a header.
type HeaderAdd struct {
	Name, Value string
	Append      bool
	IfAbsent    bool
}

// Empty reports whether there is nothing to do.
func (o *HeaderOps) Empty() bool {
	return len(o.RequestAdd)+len(o.RequestRemove)+len(o.ResponseAdd)+len(o.ResponseRemove) == 0
}

// ApplyRequest edits request headers: removals first, then additions.
func (o *HeaderOps) ApplyRequest(h http.Header) { apply(h, o.RequestRemove, o.RequestAdd) }

// ApplyResponse edits response headers: removals first, then additions.
func (o *HeaderOps) ApplyResponse(h http.Header) { apply(h, o.ResponseRemove, o.ResponseAdd) }

func apply(h http.Header, remove []string, add []HeaderAdd) {
	for _, n := range remove {
		h.Del(n)
	}
	for _, a := range add {
		switch {
		case a.IfAbsent:
			if h.Get(a.Name) == "" {
				h.Set(a.Name, a.Value)
			}
		case a.Append:
			h.Add(a.Name, a.Value)
		default:
			h.Set(a.Name, a.Value)
		}
	}
}

func compileHeaderOps(reqAdd []*corev3.HeaderValueOption, reqRemove []string, respAdd []*corev3.HeaderValueOption, respRemove []string) (HeaderOps, error) {
	var o HeaderOps
	var err error
	if o.RequestAdd, err = compileAdds(reqAdd); err != nil {
		return o, fmt.Errorf("request_headers_to_add: %w", err)
	}
	if o.ResponseAdd, err = compileAdds(respAdd); err != nil {
		return o, fmt.Errorf("response_headers_to_add: %w", err)
	}
	for _, n := range reqRemove {
		if err := checkName(n); err != nil {
			return o, fmt.Errorf("request_headers_to_remove: %w", err)
		}
	}
	for _, n := range respRemove {
		if err := checkName(n); err != nil {
			return o, fmt.Errorf("response_headers_to_remove: %w", err)
		}
	}
	o.RequestRemove, o.ResponseRemove = reqRemove, respRemove
	return o, nil
}

func compileAdds(in []*corev3.HeaderValueOption) ([]HeaderAdd, error) {
	var out []HeaderAdd
	for _, hv := range in {
		name := hv.GetHeader().GetKey()
		if err := checkName(name); err != nil {
			return nil, err
		}
		value := hv.GetHeader().GetValue()
		if value == "" && len(hv.GetHeader().GetRawValue()) > 0 {
			value = string(hv.GetHeader().GetRawValue())
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, fmt.Errorf("header %q: invalid value", name)
		}
		a := HeaderAdd{Name: name, Value: value}
		switch {
		case hv.GetAppend() != nil: //nolint:staticcheck // accepted for older translators
			a.Append = hv.GetAppend().GetValue() //nolint:staticcheck // as above
		default:
			switch hv.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				a.Append = true
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				a.IfAbsent = true
			default:
				return nil, fmt.Errorf("header %q: unsupported append_action %v", name, hv.GetAppendAction())
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// checkName refuses empty names, pseudo-headers and names that are not
// HTTP tokens.
func checkName(n string) error {
	if n == "" {
		return fmt.Errorf("empty header name")
	}
	if n[0] == ':' || strings.EqualFold(n, "host") {
		return fmt.Errorf("header %q cannot be modified", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return fmt.Errorf("header name %q is not a token", n)
		}
	}
	return nil
}
