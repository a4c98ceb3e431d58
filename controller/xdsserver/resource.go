package xdsserver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const typeURLPrefix = "type.googleapis.com/"

// Resource is one named resource the controller publishes.
//
// The server keeps Body (and Aliases) after Update or Upsert returns; the
// caller must not modify them afterwards. Passing the very same Body pointer
// (with the same aliases) in a later Update is taken to mean "unchanged" and
// skips re-encoding; fresh messages are encoded and hashed.
type Resource struct {
	// Name is the resource's real name, e.g. a workload uid or
	// "<namespace>/<hostname>" for a service. Required, unique per type.
	Name string
	// Aliases are other keys on-demand clients may subscribe with, e.g.
	// "<network>/<ip>". An alias claimed by two resources resolves to the
	// one written last.
	Aliases []string
	// Body is the resource; its message type must match the type URL.
	Body proto.Message
}

// entry is the encoded form of a Resource, shared by every stream. Only src
// ever changes after an entry is published: it is read and written solely
// by store writers, under store.writeMu; streams never look at it.
type entry struct {
	name    string
	aliases []string
	version string
	body    *anypb.Any
	src     proto.Message // the caller's last message with this content; guarded by store.writeMu
}

var errInvalidResource = errors.New("invalid resource")

// versionLen is the length of a version: 16 hex digits (64 bits of hash).
const versionLen = 16

// encoder computes encodings and versions, reusing its buffer. Not safe
// for concurrent use; store writers use one per call under writeMu.
type encoder struct {
	buf []byte // encoding, then the aliases appended for hashing
	n   int    // length of the encoding in buf
}

// encode validates r, leaves its deterministic encoding in enc.buf[:enc.n]
// and returns its version. The version hashes the encoding and the aliases
// (a changed alias must reach clients too), so it is stable across restarts.
func (enc *encoder) encode(typeURL string, r Resource) ([versionLen]byte, error) {
	var v [versionLen]byte
	if r.Name == "" {
		return v, fmt.Errorf("%w: empty name", errInvalidResource)
	}
	if r.Body == nil {
		return v, fmt.Errorf("%w: %q has no body", errInvalidResource, r.Name)
	}
	if name := r.Body.ProtoReflect().Descriptor().FullName(); !strings.HasPrefix(typeURL, typeURLPrefix) || typeURL[len(typeURLPrefix):] != string(name) {
		return v, fmt.Errorf("%w: %q is a %s, want %s", errInvalidResource, r.Name, name, typeURL)
	}
	var err error
	enc.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(enc.buf[:0], r.Body)
	if err != nil {
		return v, fmt.Errorf("encoding %q: %w", r.Name, err)
	}
	enc.n = len(enc.buf)
	for _, a := range r.Aliases {
		enc.buf = append(enc.buf, 0)
		enc.buf = append(enc.buf, a...)
	}
	sum := sha256.Sum256(enc.buf)
	hex.Encode(v[:], sum[:versionLen/2])
	return v, nil
}

// newEntry builds the entry for r from the encoding left in enc.buf.
func (enc *encoder) newEntry(typeURL string, r Resource, version [versionLen]byte) *entry {
	return &entry{
		name:    r.Name,
		aliases: r.Aliases,
		version: string(version[:]),
		body:    &anypb.Any{TypeUrl: typeURL, Value: slices.Clone(enc.buf[:enc.n])},
		src:     r.Body,
	}
}

// sameSource reports whether r is the very resource e was built from.
func (e *entry) sameSource(r Resource) bool {
	return e.src == r.Body && slices.Equal(e.aliases, r.Aliases)
}
