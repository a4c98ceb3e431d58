package proxy

import (
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// formatSeries renders name{k="v",...} with labels in the order given
// (Prometheus sorts them by name).
func formatSeries(name string, labels []*dto.LabelPair) string {
	parts := make([]string, 0, len(labels))
	for _, l := range labels {
		parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}
