package zmeshctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// Sections of a config dump that ztunnel-config prints.
const (
	sectionWorkloads    = "workloads"
	sectionServices     = "services"
	sectionPolicies     = "policies"
	sectionCertificates = "certificates"
)

// render writes one section of d in format "table", "json" or "yaml".
func render(d *configDump, section, format string, out io.Writer) error {
	switch format {
	case "", "table":
	case "json", "yaml":
		return renderData(d, section, format, out)
	default:
		return fmt.Errorf("output format must be table, json or yaml, not %q", format)
	}
	switch section {
	case sectionWorkloads:
		return workloadsTable(d, out)
	case sectionServices:
		return servicesTable(d, out)
	case sectionPolicies:
		return policiesTable(d, out)
	case sectionCertificates:
		return certificatesTable(d, out)
	}
	return fmt.Errorf("unknown section %q", section)
}

// renderData prints the section as the ztunnel served it.
func renderData(d *configDump, section, format string, out io.Writer) error {
	var v any
	switch section {
	case sectionWorkloads:
		v = orEmpty(d.raw.State.Workloads)
	case sectionServices:
		v = orEmpty(d.raw.State.Services)
	case sectionPolicies:
		v = orEmpty(d.raw.State.Policies)
	case sectionCertificates:
		v = orEmpty(d.raw.Certificates)
	default:
		return fmt.Errorf("unknown section %q", section)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", section, err)
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("encoding %s as YAML: %w", section, err)
		}
	} else {
		b = append(b, '\n')
	}
	_, err = out.Write(b)
	return err
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func workloadsTable(d *configDump, out io.Writer) error {
	t := newTable(out)
	t.row("NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL")
	for _, w := range d.workloads {
		var addrs []string
		for _, a := range w.GetAddresses() {
			addrs = append(addrs, ipString(a))
		}
		proto := "TCP"
		if w.GetTunnelProtocol() == workloadapi.TunnelProtocol_HBONE {
			proto = "HBONE"
		}
		t.row(w.GetNamespace(), w.GetName(), strings.Join(addrs, ","), w.GetNode(), d.waypointName(w.GetWaypoint()), proto)
	}
	return t.flush()
}

func servicesTable(d *configDump, out io.Writer) error {
	t := newTable(out)
	t.row("NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS")
	for _, s := range d.services {
		var vips []string
		for _, a := range s.svc.GetAddresses() {
			vips = append(vips, ipString(a.GetAddress()))
		}
		t.row(s.svc.GetNamespace(), s.svc.GetName(), strings.Join(vips, ","), d.waypointName(s.svc.GetWaypoint()),
			fmt.Sprintf("%d/%d", s.candidates, s.endpoints))
	}
	return t.flush()
}

func policiesTable(d *configDump, out io.Writer) error {
	t := newTable(out)
	t.row("NAMESPACE", "POLICY NAME", "ACTION", "SCOPE")
	for _, p := range d.policies {
		action := "Allow"
		if p.GetAction() == security.Action_DENY {
			action = "Deny"
		}
		scope := "Global"
		switch p.GetScope() {
		case security.Scope_NAMESPACE:
			scope = "Namespace " + p.GetNamespace()
		case security.Scope_WORKLOAD_SELECTOR:
			scope = "WorkloadSelector"
		}
		if p.GetDryRun() {
			action += " (dry run)"
		}
		t.row(p.GetNamespace(), p.GetName(), action, scope)
	}
	return t.flush()
}

func certificatesTable(d *configDump, out io.Writer) error {
	t := newTable(out)
	t.row("CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE")
	for _, c := range d.certificates {
		status := "Available"
		switch {
		case c.Serial == "" && c.LastError != "":
			status = "Unavailable: " + c.LastError
		case c.Serial == "":
			status = "Initializing"
		case c.LastError != "":
			status = "Available (renewal failing: " + c.LastError + ")"
		}
		t.row(c.Identity, "Leaf", status, strconv.FormatBool(c.Valid), c.Serial, timeString(c.NotAfter), timeString(c.NotBefore))
	}
	return t.flush()
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
