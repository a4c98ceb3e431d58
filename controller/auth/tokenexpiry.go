package auth

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// maxJWTPayload bounds the payload TokenExpiry decodes.
const maxJWTPayload = 16 << 10

// maxUnixSeconds is the latest expiry TokenExpiry reports (year 9999).
const maxUnixSeconds = 253402300799

// TokenExpiry reads the "exp" claim of a JWT without verifying anything. It
// only shortens how long a review the API server already accepted is
// cached; it never makes a token acceptable. It reports false when token
// is not a JWT with a numeric exp claim.
func TokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > maxJWTPayload {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	f := *claims.Exp
	if math.IsNaN(f) || f < 0 || f > maxUnixSeconds {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}
