package nodeagent

// Labels of Istio's ambient enrolment.
const (
	LabelDataplaneMode = "istio.io/dataplane-mode"
	ModeAmbient        = "ambient"
	ModeNone           = "none"
	// AnnotationRedirection is written on a pod once capture works.
	AnnotationRedirection = "ambient.istio.io/redirection"
)

// Enrolled decides whether a pod is in the ambient mesh: the pod's own
// istio.io/dataplane-mode label wins ("ambient" enrols, "none" or any other
// value opts out); without one, the namespace's label decides.
func Enrolled(podLabels, namespaceLabels map[string]string) bool {
	if mode, ok := podLabels[LabelDataplaneMode]; ok {
		return mode == ModeAmbient
	}
	return namespaceLabels[LabelDataplaneMode] == ModeAmbient
}
