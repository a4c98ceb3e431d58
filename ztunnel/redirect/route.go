package redirect

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// policyRoute is the ip rule and local route that deliver the application's
// replies to ztunnel's transparent socket (see the package comment). Its
// methods must run on a thread inside the pod's namespace.
type policyRoute struct {
	family int // unix.AF_INET or unix.AF_INET6
}

func (p policyRoute) rule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = p.family
	r.Table = RouteTable
	r.Mark = ConnMark
	mask := uint32(ConnMarkMask)
	r.Mask = &mask
	r.Priority = RulePriority
	return r
}

func (p policyRoute) route() (*netlink.Route, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if p.family == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		Family:    p.family,
		Dst:       dst,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Table:     RouteTable,
		LinkIndex: lo.Attrs().Index,
	}, nil
}

func (p policyRoute) install() error {
	rt, err := p.route()
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("add local route to table %d: %w", RouteTable, err)
	}
	n, err := p.countRules()
	if err != nil {
		return err
	}
	if n == 0 {
		if err := netlink.RuleAdd(p.rule()); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add fwmark rule: %w", err)
		}
	}
	return nil
}

func (p policyRoute) remove() error {
	var errs []error
	for {
		n, err := p.countRules()
		if err != nil || n == 0 {
			errs = append(errs, err)
			break
		}
		if err := netlink.RuleDel(p.rule()); err != nil {
			errs = append(errs, fmt.Errorf("delete fwmark rule: %w", err))
			break
		}
	}
	rt, err := p.route()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := netlink.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete local route: %w", err))
	}
	return errors.Join(errs...)
}

func (p policyRoute) check() error {
	n, err := p.countRules()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("fwmark %#x rule missing: %w", ConnMark, ErrNotInstalled)
	}
	routes, err := netlink.RouteListFiltered(p.family, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list table %d: %w", RouteTable, err)
	}
	for _, r := range routes {
		if r.Type == unix.RTN_LOCAL && r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones == 0 {
				return nil
			}
		}
		if r.Type == unix.RTN_LOCAL && r.Dst == nil {
			return nil
		}
	}
	return fmt.Errorf("local default route in table %d missing: %w", RouteTable, ErrNotInstalled)
}

// countRules counts ip rules equal to ours.
func (p policyRoute) countRules() (int, error) {
	rules, err := netlink.RuleList(p.family)
	if err != nil {
		return 0, fmt.Errorf("list ip rules: %w", err)
	}
	n := 0
	for _, r := range rules {
		if r.Table == RouteTable && r.Mark == ConnMark && r.Priority == RulePriority &&
			r.Mask != nil && *r.Mask == ConnMarkMask {
			n++
		}
	}
	return n, nil
}
