package xds

import "google.golang.org/protobuf/proto"

// Delta is one response's worth of changes to a type.
type Delta struct {
	TypeURL string
	// Upserts are added or changed resources that decoded cleanly.
	Upserts []Upsert
	// Removals are names (or, for on-demand keys the server knows nothing
	// about, the keys as subscribed) the client no longer has.
	Removals []string
}

// Upsert is one added or changed resource.
type Upsert struct {
	// Name is the resource's real name.
	Name string
	// Aliases are other keys it is known by (e.g. "<network>/<ip>").
	Aliases []string
	// Version is the server's opaque version.
	Version string
	// Message is the decoded resource, of the type's TypeConfig.New type.
	// The handler owns it.
	Message proto.Message
}

// Rejection names a resource the handler refused and why.
type Rejection struct {
	Name string
	Err  error
}

// Handler applies the changes of one type. The client calls it from one
// goroutine at a time (never concurrently with itself or with other types'
// handlers); it must not block for long and must not call Client.Stop or
// Client.Unsubscribe (Subscribe is fine).
// It returns the upserts it refused; the others count as applied. Removals
// cannot be refused.
type Handler interface {
	HandleDelta(d Delta) []Rejection
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(d Delta) []Rejection

// HandleDelta calls f.
func (f HandlerFunc) HandleDelta(d Delta) []Rejection { return f(d) }
