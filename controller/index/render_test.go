package index

import (
	"encoding/base64"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// renderOutput renders an Output as YAML with sorted keys, IP addresses as
// text and enums by name (a resource's zero-valued singular enums included,
// so that NONE/HEALTHY/ALLOW... are visible), for golden files a person can
// check.
func renderOutput(out *Output) ([]byte, error) {
	doc := map[string]any{}
	if len(out.Problems) > 0 {
		var ps []string
		for _, p := range out.Problems {
			ps = append(ps, p.String())
		}
		doc["problems"] = ps
	}
	ws := map[string]any{}
	for k, w := range out.Workloads {
		ws[k] = protoValue(w.ProtoReflect(), true)
	}
	ss := map[string]any{}
	for k, s := range out.Services {
		ss[k] = protoValue(s.ProtoReflect(), true)
	}
	ps := map[string]any{}
	for k, p := range out.Policies {
		ps[k] = protoValue(p.ProtoReflect(), true)
	}
	doc["workloads"], doc["services"], doc["policies"] = ws, ss, ps
	if len(out.ServiceWaypoints) > 0 {
		sw := map[string]any{}
		for k, b := range out.ServiceWaypoints {
			sw[k] = map[string]any{"waypoint": b.Waypoint, "condition": conditionValue(&b.Condition)}
		}
		doc["serviceWaypoints"] = sw
	}
	if len(out.PolicyStatus) > 0 {
		st := map[string]any{}
		for k, p := range out.PolicyStatus {
			m := map[string]any{"generation": p.Generation}
			if p.Ztunnel != nil {
				m["ztunnelAccepted"] = conditionValue(p.Ztunnel)
			}
			if p.Waypoint != nil {
				m["waypointAccepted"] = conditionValue(p.Waypoint)
			}
			st[k] = m
		}
		doc["policyStatus"] = st
	}
	return yaml.Marshal(doc)
}

func conditionValue(c *Condition) map[string]any {
	return map[string]any{"status": c.Status, "reason": c.Reason, "message": c.Message}
}

// protoValue converts a message; top says it is a resource, whose unset
// singular enums are shown by their zero name.
func protoValue(m protoreflect.Message, top bool) map[string]any {
	res := map[string]any{}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			if top && fd.Kind() == protoreflect.EnumKind && fd.Cardinality() != protoreflect.Repeated && fd.ContainingOneof() == nil {
				res[string(fd.Name())] = enumName(fd, m.Get(fd).Enum())
			}
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			mm := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				mm[k.String()] = scalarValue(fd.MapValue(), mv)
				return true
			})
			res[string(fd.Name())] = mm
		case fd.IsList():
			var l []any
			for j := 0; j < v.List().Len(); j++ {
				l = append(l, scalarValue(fd, v.List().Get(j)))
			}
			res[string(fd.Name())] = l
		default:
			res[string(fd.Name())] = scalarValue(fd, v)
		}
	}
	return res
}

func scalarValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoValue(v.Message(), false)
	case protoreflect.EnumKind:
		return enumName(fd, v.Enum())
	case protoreflect.BytesKind:
		if a, ok := netip.AddrFromSlice(v.Bytes()); ok {
			return a.String()
		}
		return base64.StdEncoding.EncodeToString(v.Bytes())
	default:
		return v.Interface()
	}
}

func enumName(fd protoreflect.FieldDescriptor, n protoreflect.EnumNumber) string {
	if ev := fd.Enum().Values().ByNumber(n); ev != nil {
		return string(ev.Name())
	}
	return fmt.Sprint(n)
}
