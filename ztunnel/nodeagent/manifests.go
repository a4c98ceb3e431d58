package nodeagent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifest is what one file contributes to the local pod source: every
// Pod and Namespace in it (Pods of every node; the source filters).
type manifest struct {
	pods       []corev1.Pod
	namespaces []corev1.Namespace
}

// parseManifest decodes a multi-document YAML (or JSON) file. Documents of
// other kinds are skipped; a document that is not valid YAML, lacks
// apiVersion or kind, or is a Pod or Namespace that does not decode
// strictly or lacks a name rejects the whole file.
func parseManifest(data []byte) (*manifest, error) {
	m := &manifest{}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if err := m.add(doc); err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
	}
}

// add decodes one document into m.
func (m *manifest) add(doc []byte) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil // empty document (comments only)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		return fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return errors.New("apiVersion and kind are required")
	}
	if tm.APIVersion != "v1" {
		return nil
	}
	switch tm.Kind {
	case "Pod":
		var p corev1.Pod
		if err := strictJSON(js, &p); err != nil {
			return fmt.Errorf("v1 Pod: %w", err)
		}
		if p.Name == "" {
			return errors.New("v1 Pod: metadata.name is required")
		}
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		m.pods = append(m.pods, p)
	case "Namespace":
		var ns corev1.Namespace
		if err := strictJSON(js, &ns); err != nil {
			return fmt.Errorf("v1 Namespace: %w", err)
		}
		if ns.Name == "" {
			return errors.New("v1 Namespace: metadata.name is required")
		}
		m.namespaces = append(m.namespaces, ns)
	}
	return nil
}

// strictJSON decodes js into v, rejecting unknown fields (a typo in a
// label key's parent must not pass silently).
func strictJSON(js []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	return d.Decode(v)
}
