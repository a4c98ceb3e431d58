package log

// LastError remembers the last error a loop reported, so that a failure
// that persists across iterations is logged once, not every time. The zero
// value is ready; it is not safe for concurrent use.
type LastError struct{ msg string }

// Changed records err (nil: no error) and reports whether it differs from
// the previously recorded one: a new error, another error, or a recovery.
func (l *LastError) Changed(err error) bool {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	changed := msg != l.msg
	l.msg = msg
	return changed
}
