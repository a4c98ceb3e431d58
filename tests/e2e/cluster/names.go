package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultPrefix starts the names of everything a Cluster creates when
// Options.Prefix is empty.
const DefaultPrefix = "zmesh"

// netnsDir is where named network namespaces are bind-mounted (the
// iproute2 convention, so `ip netns list` shows them).
const netnsDir = "/var/run/netns"

// newRunID returns "<prefix>-<pid>-<8 hex>", the stem of every name one
// Cluster creates.
func newRunID(prefix string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random run id: %w", err)
	}
	return fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:])), nil
}

// ownerPID extracts the creating process's pid from a name made by
// newRunID (possibly with more suffixes). ok is false for names that do not
// follow the scheme.
func ownerPID(prefix, name string) (pid int, ok bool) {
	rest, found := strings.CutPrefix(name, prefix+"-")
	if !found {
		return 0, false
	}
	pidStr, rest, found := strings.Cut(rest, "-")
	if !found || len(rest) < 8 {
		return 0, false
	}
	if _, err := hex.DecodeString(rest[:8]); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// validPrefix reports whether prefix is usable in namespace and file names.
func validPrefix(prefix string) bool {
	if prefix == "" || len(prefix) > 32 {
		return false
	}
	for _, r := range prefix {
		if !isLowerAlnum(r) && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// isLowerAlnum reports whether r is an ASCII lowercase letter or digit.
func isLowerAlnum(r rune) bool { return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' }

// newUID returns a random RFC 4122 version 4 UUID string, the form
// Kubernetes uses for object uids.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random uid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}
