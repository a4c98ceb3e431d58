package redirect

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// family applies one ruleSet with one iptables binary. Its methods must run
// on a thread inside the pod's namespace: the binary inherits it.
type family struct {
	name string // "ipv4" or "ipv6", for messages
	ipt  *iptables.IPTables
	rs   ruleSet
}

// install makes our chains hold exactly rs and each hook jump exist once.
// Chains are filled before any jump is added.
func (f *family) install() error {
	for _, h := range f.rs.hooks {
		// ClearChain creates the chain or flushes an existing one.
		if err := f.ipt.ClearChain(h.table, h.target); err != nil {
			return fmt.Errorf("%s: create chain %s/%s: %w", f.name, h.table, h.target, err)
		}
	}
	for _, r := range f.rs.rules {
		if err := f.ipt.Append(r.table, r.chain, r.spec...); err != nil {
			return fmt.Errorf("%s: append to %s/%s %q: %w", f.name, r.table, r.chain, strings.Join(r.spec, " "), err)
		}
	}
	for _, h := range f.rs.hooks {
		n, err := f.countJumps(h)
		if err != nil {
			return err
		}
		switch {
		case n == 0:
			if err := f.ipt.Append(h.table, h.builtin, "-j", h.target); err != nil {
				return fmt.Errorf("%s: add jump %s/%s → %s: %w", f.name, h.table, h.builtin, h.target, err)
			}
		case n > 1:
			for range n - 1 {
				if err := f.ipt.Delete(h.table, h.builtin, "-j", h.target); err != nil {
					return fmt.Errorf("%s: delete duplicate jump %s/%s → %s: %w", f.name, h.table, h.builtin, h.target, err)
				}
			}
		}
	}
	return nil
}

// remove deletes our jumps and chains; what is already gone is not an error.
func (f *family) remove() error {
	var errs []error
	for _, h := range f.rs.hooks {
		n, err := f.countJumps(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for range n {
			if err := f.ipt.Delete(h.table, h.builtin, "-j", h.target); err != nil {
				errs = append(errs, fmt.Errorf("%s: delete jump %s/%s → %s: %w", f.name, h.table, h.builtin, h.target, err))
			}
		}
	}
	for _, h := range f.rs.hooks {
		exists, err := f.ipt.ChainExists(h.table, h.target)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: list %s: %w", f.name, h.table, err))
			continue
		}
		if !exists {
			continue
		}
		if err := f.ipt.ClearAndDeleteChain(h.table, h.target); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete chain %s/%s: %w", f.name, h.table, h.target, err))
		}
	}
	return errors.Join(errs...)
}

// check returns nil when our chains hold exactly rs and each jump exists
// once, an error wrapping ErrNotInstalled naming the first difference, or
// the iptables error. A listing that races with another process changing
// the same table (iptables-nft then calls the chain "incompatible") is
// retried a few times before it counts.
func (f *family) check() error {
	var err error
	for attempt := 1; ; attempt++ {
		err = f.checkOnce()
		if err == nil || attempt == 5 || !racedWithUpdate(err) {
			return err
		}
		time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
	}
}

// racedWithUpdate reports an iptables-nft listing that saw a table mid-update.
func racedWithUpdate(err error) bool {
	return strings.Contains(err.Error(), "is incompatible, use 'nft' tool")
}

func (f *family) checkOnce() error {
	want := map[hook]int{}
	for _, r := range f.rs.rules {
		want[hook{table: r.table, target: r.chain}]++
	}
	for _, h := range f.rs.hooks {
		exists, err := f.ipt.ChainExists(h.table, h.target)
		if err != nil {
			return fmt.Errorf("%s: list %s: %w", f.name, h.table, err)
		}
		if !exists {
			return fmt.Errorf("%s: chain %s/%s missing: %w", f.name, h.table, h.target, ErrNotInstalled)
		}
		lines, err := f.ipt.List(h.table, h.target)
		if err != nil {
			return fmt.Errorf("%s: list %s/%s: %w", f.name, h.table, h.target, err)
		}
		// The first line is the chain declaration (-N).
		if got, n := len(lines)-1, want[hook{table: h.table, target: h.target}]; got != n {
			return fmt.Errorf("%s: chain %s/%s has %d rules, want %d: %w", f.name, h.table, h.target, got, n, ErrNotInstalled)
		}
		n, err := f.countJumps(h)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%s: %d jumps %s/%s → %s, want 1: %w", f.name, n, h.table, h.builtin, h.target, ErrNotInstalled)
		}
	}
	for _, r := range f.rs.rules {
		ok, err := f.ipt.Exists(r.table, r.chain, r.spec...)
		if err != nil {
			return fmt.Errorf("%s: check %s/%s: %w", f.name, r.table, r.chain, err)
		}
		if !ok {
			return fmt.Errorf("%s: rule missing in %s/%s: %q: %w", f.name, r.table, r.chain, strings.Join(r.spec, " "), ErrNotInstalled)
		}
	}
	return nil
}

// countJumps counts the unconditional jumps from h.builtin to h.target.
func (f *family) countJumps(h hook) (int, error) {
	lines, err := f.ipt.List(h.table, h.builtin)
	if err != nil {
		return 0, fmt.Errorf("%s: list %s/%s: %w", f.name, h.table, h.builtin, err)
	}
	want := "-A " + h.builtin + " -j " + h.target
	n := 0
	for _, l := range lines {
		if strings.TrimSpace(l) == want {
			n++
		}
	}
	return n, nil
}
