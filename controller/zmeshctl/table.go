package zmeshctl

import (
	"io"
	"strings"
	"text/tabwriter"
)

// table writes aligned columns the way istioctl and kubectl do.
type table struct{ w *tabwriter.Writer }

func newTable(out io.Writer) *table {
	return &table{w: tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)}
}

// row writes one line; empty cells become "-" so columns stay aligned.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = strings.ReplaceAll(cells[i], "\t", " ")
	}
	_, _ = io.WriteString(t.w, strings.Join(cells, "\t")+"\n")
}

func (t *table) flush() error { return t.w.Flush() }
