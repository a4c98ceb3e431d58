package zmeshctl

import (
	"io"
	"testing"
)

// FuzzParseConfigDump: whatever a ztunnel (or anything listening on its
// address) answers, parsing and rendering every section and format neither
// panics nor hangs.
func FuzzParseConfigDump(f *testing.F) {
	f.Add([]byte(`{"state":{"workloads":[{"uid":"u","name":"a","namespace":"n","addresses":["CgAAAQ=="],` +
		`"waypoint":{"address":{"address":"CmAAHg=="},"hboneMtlsPort":15008}}],` +
		`"services":[{"service":{"name":"s","namespace":"n","hostname":"s.n","addresses":[{"address":"CmAAHg=="}]},"endpoints":["u"],"candidates":[]}],` +
		`"policies":[{"name":"p","namespace":"n","scope":"NAMESPACE","action":"DENY"}]},` +
		`"certificates":[{"identity":"spiffe://td/ns/n/sa/a","pods":1,"serial":"1","notAfter":"2026-01-01T00:00:00Z","valid":true}],"pods":1}`))
	f.Add([]byte(`{"state":{"workloads":[{"addresses":["AQ=="],"waypoint":{"hostname":{"namespace":"x","hostname":"y"}}}]}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := parseConfigDump(body)
		if err != nil {
			return
		}
		for _, section := range []string{sectionWorkloads, sectionServices, sectionPolicies, sectionCertificates} {
			for _, format := range []string{"table", "json", "yaml"} {
				if err := render(d, section, format, io.Discard); err != nil {
					t.Fatalf("render %s as %s of a parsed dump: %v", section, format, err)
				}
			}
		}
	})
}
