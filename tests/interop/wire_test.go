package interop

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	istiowl "istio.io/istio/pkg/workloadapi"
	istiosec "istio.io/istio/pkg/workloadapi/security"
	istiozds "istio.io/istio/pkg/zdsapi"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// pairs lists each of our messages with Istio's message of the same name.
var pairs = []struct {
	ours, theirs proto.Message
}{
	{&workloadapi.Address{}, &istiowl.Address{}},
	{&workloadapi.Workload{}, &istiowl.Workload{}},
	{&workloadapi.Service{}, &istiowl.Service{}},
	{&workloadapi.GatewayAddress{}, &istiowl.GatewayAddress{}},
	{&security.Authorization{}, &istiosec.Authorization{}},
	{&security.Match{}, &istiosec.Match{}},
	{&security.StringMatch{}, &istiosec.StringMatch{}},
	{&zdsapi.ZdsHello{}, &istiozds.ZdsHello{}},
	{&zdsapi.WorkloadRequest{}, &istiozds.WorkloadRequest{}},
	{&zdsapi.WorkloadResponse{}, &istiozds.WorkloadResponse{}},
}

const variants = 4 // the largest oneof has four members

// TestFieldForField marshals fully populated messages of one side, decodes
// them with the other side's types and checks nothing is lost or unknown, in
// both directions and for every oneof member.
func TestFieldForField(t *testing.T) {
	for _, p := range pairs {
		name := string(p.ours.ProtoReflect().Descriptor().FullName())
		for v := 0; v < variants; v++ {
			t.Run(name, func(t *testing.T) {
				roundTrip(t, p.ours, p.theirs, v)
				roundTrip(t, p.theirs, p.ours, v)
			})
		}
	}
}

func roundTrip(t *testing.T, fromType, toType proto.Message, variant int) {
	t.Helper()
	src := fromType.ProtoReflect().New()
	fill(src, variant, 0)
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(src.Interface())
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	dst := toType.ProtoReflect().New()
	if err := proto.Unmarshal(wire, dst.Interface()); err != nil {
		t.Fatalf("unmarshal into %T: %v", toType, err)
	}
	if path := unknownFields(dst, string(dst.Descriptor().FullName())); path != "" {
		t.Fatalf("%T left unknown fields at %s: a field number or type differs", toType, path)
	}
	// Same names and values: the JSON forms are identical.
	a, err := protojson.Marshal(src.Interface())
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	b, err := protojson.Marshal(dst.Interface())
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	if !jsonEqual(t, a, b) {
		t.Fatalf("%s decoded differently:\n ours:   %s\n theirs: %s", src.Descriptor().FullName(), a, b)
	}
	// And back again, byte for byte.
	back, err := proto.MarshalOptions{Deterministic: true}.Marshal(dst.Interface())
	if err != nil {
		t.Fatalf("re-marshal: %v", err)
	}
	again := fromType.ProtoReflect().New()
	if err := proto.Unmarshal(back, again.Interface()); err != nil {
		t.Fatalf("unmarshal back: %v", err)
	}
	if !proto.Equal(src.Interface(), again.Interface()) {
		t.Fatalf("%s changed on the way back", src.Descriptor().FullName())
	}
}

// unknownFields returns the path of the first message holding unknown
// fields, or "".
func unknownFields(m protoreflect.Message, path string) string {
	if len(m.GetUnknown()) > 0 {
		return path
	}
	found := ""
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					found = unknownFields(mv.Message(), p)
				}
				return found == ""
			})
		case fd.IsList():
			for i := 0; i < v.List().Len() && found == ""; i++ {
				found = unknownFields(v.List().Get(i).Message(), p)
			}
		default:
			found = unknownFields(v.Message(), p)
		}
		return found == ""
	})
	return found
}

// TestDescriptorsMatch compares every field of every message and every enum
// value in our files with Istio's: number, name, kind, cardinality.
func TestDescriptorsMatch(t *testing.T) {
	files := []struct{ ours, theirs protoreflect.FileDescriptor }{
		{workloadapi.File_workloadapi_workload_proto, istiowl.File_workloadapi_workload_proto},
		{security.File_workloadapi_security_authorization_proto, istiosec.File_workloadapi_security_authorization_proto},
		{zdsapi.File_zdsapi_zds_proto, istiozds.File_zdsapi_zds_proto},
	}
	for _, f := range files {
		if f.ours.Package() != f.theirs.Package() {
			t.Errorf("package %s, Istio has %s", f.ours.Package(), f.theirs.Package())
		}
		compareMessages(t, f.ours.Messages(), f.theirs.Messages())
		compareEnums(t, f.ours.Enums(), f.theirs.Enums())
	}
}

func compareMessages(t *testing.T, ours, theirs protoreflect.MessageDescriptors) {
	t.Helper()
	if ours.Len() != theirs.Len() {
		t.Errorf("%d messages, Istio has %d", ours.Len(), theirs.Len())
	}
	for i := 0; i < theirs.Len(); i++ {
		tm := theirs.Get(i)
		om := ours.ByName(tm.Name())
		if om == nil {
			t.Errorf("missing message %s", tm.FullName())
			continue
		}
		if om.Fields().Len() != tm.Fields().Len() {
			t.Errorf("%s: %d fields, Istio has %d", om.FullName(), om.Fields().Len(), tm.Fields().Len())
		}
		for j := 0; j < tm.Fields().Len(); j++ {
			tf := tm.Fields().Get(j)
			of := om.Fields().ByNumber(tf.Number())
			switch {
			case of == nil:
				t.Errorf("%s: no field %d (%s)", om.FullName(), tf.Number(), tf.Name())
			case of.Name() != tf.Name() || of.Kind() != tf.Kind() || of.Cardinality() != tf.Cardinality() ||
				of.IsMap() != tf.IsMap() || of.HasPresence() != tf.HasPresence():
				t.Errorf("%s field %d: ours %s %v %v, Istio %s %v %v", om.FullName(), tf.Number(),
					of.Name(), of.Kind(), of.Cardinality(), tf.Name(), tf.Kind(), tf.Cardinality())
			case of.Message() != nil && of.Message().FullName() != tf.Message().FullName():
				t.Errorf("%s field %s: type %s, Istio %s", om.FullName(), of.Name(), of.Message().FullName(), tf.Message().FullName())
			case of.Enum() != nil && of.Enum().FullName() != tf.Enum().FullName():
				t.Errorf("%s field %s: enum %s, Istio %s", om.FullName(), of.Name(), of.Enum().FullName(), tf.Enum().FullName())
			}
		}
		compareMessages(t, om.Messages(), tm.Messages())
		compareEnums(t, om.Enums(), tm.Enums())
	}
}

func compareEnums(t *testing.T, ours, theirs protoreflect.EnumDescriptors) {
	t.Helper()
	for i := 0; i < theirs.Len(); i++ {
		te := theirs.Get(i)
		oe := ours.ByName(te.Name())
		if oe == nil {
			t.Errorf("missing enum %s", te.FullName())
			continue
		}
		for j := 0; j < te.Values().Len(); j++ {
			tv := te.Values().Get(j)
			if ov := oe.Values().ByNumber(tv.Number()); ov == nil || ov.Name() != tv.Name() {
				t.Errorf("%s: value %d should be %s", oe.FullName(), tv.Number(), tv.Name())
			}
		}
	}
}
