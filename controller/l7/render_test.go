package l7

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// renderOutput renders an Output as indented JSON: resources in protojson
// (re-indented: protojson's own spacing is deliberately unstable).
func renderOutput(out *Output) ([]byte, error) {
	var doc struct {
		Listeners []json.RawMessage `json:"listeners"`
		Clusters  []json.RawMessage `json:"clusters"`
		Problems  []string          `json:"problems"`
	}
	enc := func(m proto.Message) (json.RawMessage, error) {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return nil, err
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			return nil, err
		}
		return c.Bytes(), nil
	}
	for _, l := range out.Listeners {
		b, err := enc(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		doc.Listeners = append(doc.Listeners, b)
	}
	for _, c := range out.Clusters {
		b, err := enc(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		doc.Clusters = append(doc.Clusters, b)
	}
	for _, p := range out.Problems {
		doc.Problems = append(doc.Problems, p.String())
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var ind bytes.Buffer
	if err := json.Indent(&ind, raw, "", "  "); err != nil {
		return nil, err
	}
	ind.WriteByte('\n')
	return ind.Bytes(), nil
}
