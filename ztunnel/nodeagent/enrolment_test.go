package nodeagent

import "testing"

func TestEnrolled(t *testing.T) {
	amb := map[string]string{LabelDataplaneMode: ModeAmbient}
	none := map[string]string{LabelDataplaneMode: ModeNone}
	tests := []struct {
		name     string
		pod, ns  map[string]string
		enrolled bool
	}{
		{"namespace ambient", nil, amb, true},
		{"namespace unlabelled", nil, nil, false},
		{"pod ambient in unlabelled namespace", amb, nil, true},
		{"pod none in ambient namespace", none, amb, false},
		{"pod with unknown mode opts out", map[string]string{LabelDataplaneMode: "sidecar"}, amb, false},
		{"other pod labels do not matter", map[string]string{"app": "x"}, amb, true},
	}
	for _, tt := range tests {
		if got := Enrolled(tt.pod, tt.ns); got != tt.enrolled {
			t.Errorf("%s: got %v", tt.name, got)
		}
	}
}
