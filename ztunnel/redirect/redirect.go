package redirect

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/pkg/netns"
)

// Redirector installs the in-pod redirection into pod namespaces. It is safe
// for concurrent use; it holds no namespace and starts no goroutines.
type Redirector struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	families []*family // built on first use: go-iptables runs the binary to learn its version
	routes   []policyRoute
}

// New validates cfg and returns a Redirector. It does not touch any
// namespace or run any binary.
func New(cfg Config) (*Redirector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &Redirector{cfg: cfg, log: cfg.Logger, routes: []policyRoute{{family: unix.AF_INET}}}
	if cfg.IPv6 {
		r.routes = append(r.routes, policyRoute{family: unix.AF_INET6})
	}
	return r, nil
}

// setup builds the iptables handles once.
func (r *Redirector) setup() ([]*family, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.families != nil {
		return r.families, nil
	}
	// An empty Path makes go-iptables look the binary up in PATH.
	ipt4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(r.cfg.IPTablesPath))
	if err != nil {
		return nil, fmt.Errorf("redirect: iptables: %w", err)
	}
	fams := []*family{{
		name: "ipv4", ipt: ipt4,
		rs: buildRules(r.cfg.DNSCapture, r.cfg.ProbeSNATv4, netip.MustParsePrefix("127.0.0.0/8")),
	}}
	if r.cfg.IPv6 {
		ipt6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Path(r.cfg.IP6TablesPath))
		if err != nil {
			return nil, fmt.Errorf("redirect: ip6tables: %w", err)
		}
		fams = append(fams, &family{
			name: "ipv6", ipt: ipt6,
			rs: buildRules(r.cfg.DNSCapture, r.cfg.ProbeSNATv6, netip.MustParsePrefix("::1/128")),
		})
	}
	r.families = fams
	return fams, nil
}

// Install puts the redirection into the namespace ns (not closed). When
// Check already passes nothing changes; otherwise our chains are rebuilt and
// the policy route added. On error the namespace may hold a partial
// installation: call Remove, or Install again.
func (r *Redirector) Install(ns *os.File) error {
	fams, err := r.setup()
	if err != nil {
		return err
	}
	err = netns.Do(ns, func() error {
		if r.checkHere(fams) == nil {
			return nil
		}
		for _, p := range r.routes {
			if err := p.install(); err != nil {
				return err
			}
		}
		for _, f := range fams {
			if err := f.install(); err != nil {
				return err
			}
		}
		return r.checkHere(fams)
	})
	if err != nil {
		return fmt.Errorf("redirect: install: %w", err)
	}
	r.log.Debug("in-pod redirection installed", "netns", ns.Name())
	return nil
}

// Remove deletes our chains, jumps, ip rule and route from ns (not closed);
// anything already absent is skipped, and rules that are not ours are never
// touched.
func (r *Redirector) Remove(ns *os.File) error {
	fams, err := r.setup()
	if err != nil {
		return err
	}
	err = netns.Do(ns, func() error {
		var errs []error
		for _, f := range fams {
			errs = append(errs, f.remove())
		}
		for _, p := range r.routes {
			errs = append(errs, p.remove())
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("redirect: remove: %w", err)
	}
	r.log.Debug("in-pod redirection removed", "netns", ns.Name())
	return nil
}

// Check reports whether ns (not closed) holds exactly the redirection
// Install would create for this Config: nil if so, an error wrapping
// ErrNotInstalled that names the first difference if not, any other error
// if the state could not be read.
func (r *Redirector) Check(ns *os.File) error {
	fams, err := r.setup()
	if err != nil {
		return err
	}
	if err := netns.Do(ns, func() error { return r.checkHere(fams) }); err != nil {
		return fmt.Errorf("redirect: check: %w", err)
	}
	return nil
}

func (r *Redirector) checkHere(fams []*family) error {
	for _, f := range fams {
		if err := f.check(); err != nil {
			return err
		}
	}
	for _, p := range r.routes {
		if err := p.check(); err != nil {
			return err
		}
	}
	return nil
}
