package index

// selects reports whether every key/value of selector is in labels. An empty
// selector selects everything; callers decide whether that is meaningful.
func selects(selector, labels map[string]string) bool {
	if len(selector) > len(labels) {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// mergeLabels returns base overlaid with over, without modifying either.
func mergeLabels(base, over map[string]string) map[string]string {
	if len(over) == 0 {
		return base
	}
	if len(base) == 0 {
		return over
	}
	res := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		res[k] = v
	}
	for k, v := range over {
		res[k] = v
	}
	return res
}
