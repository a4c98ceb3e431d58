package configdir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"

	"github.com/golang/protobuf/jsonpb" //nolint:staticcheck // the parser Istio's own types use; protojson reads durations differently
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// decoder turns manifest bytes into typed objects of the kinds the index reads.
type decoder struct {
	codecs serializer.CodecFactory
}

func newDecoder() *decoder {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(discoveryv1.AddToScheme(s))
	utilruntime.Must(istioscheme.AddToScheme(s))
	utilruntime.Must(gatewayv1.Install(s))
	return &decoder{codecs: serializer.NewCodecFactory(s, serializer.EnableStrict)}
}

// errUnsupportedKind marks a well-formed document of a kind the mesh does
// not read (a Deployment, say); callers skip it rather than fail the file.
var errUnsupportedKind = errors.New("kind not read by the mesh")

// decodeAll splits a multi-document YAML (or JSON) stream and decodes each
// document. Documents of kinds the mesh does not read come back in skipped.
func (d *decoder) decodeAll(data []byte) (objs []runtime.Object, skipped []string, err error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, skipped, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, err := d.decode(doc)
		if errors.Is(err, errUnsupportedKind) {
			skipped = append(skipped, fmt.Sprintf("document %d: %v", n, err))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", n, err)
		}
		objs = append(objs, obj)
	}
}

func (d *decoder) decode(doc []byte) (runtime.Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if meta.APIVersion == "" || meta.Kind == "" {
		return nil, errors.New("apiVersion and kind are required")
	}
	obj, gvk, err := d.codecs.UniversalDeserializer().Decode(js, nil, nil)
	if runtime.IsNotRegisteredError(err) {
		return nil, fmt.Errorf("%s %s: %w", meta.APIVersion, meta.Kind, errUnsupportedKind)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", meta.APIVersion, meta.Kind, err)
	}
	if err := strictSpec(obj, js); err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk.GroupVersion(), gvk.Kind, err)
	}
	return obj, nil
}

// strictSpec re-reads the spec of Istio objects with the JSON parser their
// generated decoders use (github.com/golang/protobuf's jsonpb, which reads
// durations as Go does: "500ms", "1m30s") but refusing unknown fields: the
// generated decoders accept them, which would hide typos such as
// "actoin: DENY".
func strictSpec(obj runtime.Object, js []byte) error {
	v := reflect.ValueOf(obj).Elem()
	if v.Kind() != reflect.Struct {
		return nil
	}
	spec := v.FieldByName("Spec")
	if !spec.IsValid() || !spec.CanAddr() {
		return nil
	}
	msg, ok := spec.Addr().Interface().(proto.Message)
	if !ok {
		return nil
	}
	var raw struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(js, &raw); err != nil || len(raw.Spec) == 0 {
		return nil //nolint:nilerr // the object decoded already; an absent spec is valid
	}
	fresh := protoadapt.MessageV1Of(msg.ProtoReflect().New().Interface())
	strict := jsonpb.Unmarshaler{AllowUnknownFields: false}
	if err := strict.Unmarshal(bytes.NewReader(raw.Spec), fresh); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}

// stripComments drops YAML comment-only lines so that a document holding
// nothing but comments counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	return out
}

// kindOf names obj's Go type, which matches its Kubernetes kind for every
// type the decoder knows.
func kindOf(obj runtime.Object) string {
	return reflect.TypeOf(obj).Elem().Name()
}
