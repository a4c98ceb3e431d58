package auth

import (
	"context"
	"errors"
)

// Chain tries authenticators in order and returns the first success. It
// fails only if all fail (the error joins theirs), or if it is empty.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context) (Caller, error) {
	if len(c) == 0 {
		return Caller{}, errors.New("auth: no authenticators configured")
	}
	errs := make([]error, 0, len(c))
	for _, a := range c {
		caller, err := a.Authenticate(ctx)
		if err == nil {
			return caller, nil
		}
		errs = append(errs, err)
	}
	return Caller{}, errors.Join(errs...)
}
