package status

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/zmesh/zmesh/controller/index"
)

// want is one condition the Writer wants an object to carry.
type want struct {
	Type, Status, Reason, Message string
	ObservedGeneration            int64
}

func fromIndex(typ string, c *index.Condition, generation int64) want {
	st := string(metav1.ConditionFalse)
	if c.Status {
		st = string(metav1.ConditionTrue)
	}
	return want{Type: typ, Status: st, Reason: c.Reason, Message: c.Message, ObservedGeneration: generation}
}

// fingerprint identifies a set of wanted conditions (times excluded).
func fingerprint(ws []want) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%s\x00%s\x00%s\x00%s\x00%d\x01", w.Type, w.Status, w.Reason, w.Message, w.ObservedGeneration)
	}
	return b.String()
}

func everything() labels.Selector { return labels.Everything() }
