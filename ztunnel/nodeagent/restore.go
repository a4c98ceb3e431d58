package nodeagent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/zmesh/zmesh/pkg/netns"
)

// AwaitingNetns lists the pods the source reported whose network namespace
// the agent does not know (after a restart: all of them).
func (a *Agent) AwaitingNetns() []Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Pod
	for _, ps := range a.pods {
		if ps.pod.Name != "" && ps.netnsPath == "" {
			out = append(out, ps.pod)
		}
	}
	return out
}

// Known reports whether the source has reported pod uid.
func (a *Agent) Known(uid string) bool {
	st, ok := a.Status(uid)
	return ok && st.Known
}

// Restore gives the agent, after its restart, the network namespace of a
// pod that was already running. A pod that belongs in the mesh is enrolled
// as by SetNetns: handed to ztunnel (replayed in the ZDS snapshot) and its
// redirection checked, which leaves rules already in place untouched. A pod
// that does not belong (its labels changed while the agent was down) loses
// any redirection left in its namespace, so the pod is not captured with
// nobody to hand it to ztunnel.
func (a *Agent) Restore(ctx context.Context, uid, path string) error {
	a.mu.Lock()
	defer a.unlock()
	ps := a.pods[uid]
	if ps == nil || ps.pod.Name == "" {
		return fmt.Errorf("restore %s: pod not known to the source", uid)
	}
	ps.netnsPath = path
	if err := a.reconcile(ctx, ps); err != nil {
		return err
	}
	if ps.enrolled {
		return nil
	}
	ns, err := netns.Open(path)
	if err != nil {
		return fmt.Errorf("restore %s/%s: %w", ps.pod.Namespace, ps.pod.Name, err)
	}
	defer ns.Close()
	if err := a.cfg.Redirector.Remove(ns); err != nil {
		return fmt.Errorf("restore %s/%s: remove leftover redirection: %w", ps.pod.Namespace, ps.pod.Name, err)
	}
	return nil
}

// LostPod is a pod that belongs in the mesh and has an address, but whose
// network namespace the restarted agent could not find: it stays
// uncaptured until its sandbox is recreated (CNI ADD).
type LostPod struct {
	Pod    Pod
	Reason string
}

// restorePods finds the network namespaces of the pods the source reported
// and hands them to the agent (Restore): first from the state directory
// (verified to still hold the pod's address), then, for the rest, by
// searching the host's namespaces for the pod's address. Records of pods
// the source no longer has are deleted. It returns the pods that belong in
// the mesh but could not be restored.
func (d *Daemon) restorePods(ctx context.Context) []LostPod {
	pods := d.agent.AwaitingNetns()
	var recs map[string]NetnsRecord
	if d.store != nil {
		var err error
		if recs, err = d.store.Load(d.log); err != nil {
			d.log.Error("pod state unreadable; searching for every pod's network namespace", "err", err)
		}
		for uid := range recs {
			if !d.agent.Known(uid) {
				d.log.Info("forgetting the state of a pod that is gone", "uid", uid, "netns", recs[uid].Netns)
				if err := d.store.Delete(uid); err != nil {
					d.log.Warn("pod state not deleted", "uid", uid, "err", err)
				}
			}
		}
	}
	found := map[string]string{}
	why := map[string]string{}
	var search []Pod
	for _, p := range pods {
		rec, ok := recs[p.UID]
		if ok && rec.Netns != "" {
			err := verifyNetns(rec.Netns, p.IPs)
			if err == nil {
				found[p.UID] = rec.Netns
				continue
			}
			why[p.UID] = "recorded network namespace unusable: " + err.Error()
		}
		if len(p.IPs) > 0 {
			search = append(search, p)
		}
	}
	if len(search) > 0 && d.finder != nil {
		names := make([]string, 0, len(search))
		var want []netip.Addr
		for _, p := range search {
			want = append(want, p.IPs...)
			names = append(names, p.Namespace+"/"+p.Name)
		}
		d.log.Info("searching the host for pods' network namespaces", "pods", names)
		byIP := d.finder.Find(want)
		for _, p := range search {
			var paths []string
			for _, ip := range p.IPs {
				paths = append(paths, byIP[ip]...)
			}
			switch {
			case len(paths) == 1:
				found[p.UID] = paths[0]
			case len(paths) > 1:
				why[p.UID] = fmt.Sprintf("address %v held by %d network namespaces %v", p.IPs, len(paths), paths)
			default:
				if why[p.UID] == "" {
					why[p.UID] = fmt.Sprintf("no network namespace holds address %v", p.IPs)
				}
			}
		}
	}
	var lost []LostPod
	for _, p := range pods {
		path, ok := found[p.UID]
		if ok {
			err := d.agent.Restore(ctx, p.UID, path)
			if err == nil {
				d.log.Info("running pod restored at start", "pod", p.Namespace+"/"+p.Name, "uid", p.UID, "netns", path, "enrolled", d.agent.IsEnrolled(p.UID))
				if d.store != nil {
					if err := d.store.Save(NetnsRecord{UID: p.UID, Namespace: p.Namespace, Name: p.Name, Netns: path}); err != nil {
						d.log.Warn("pod state not saved", "uid", p.UID, "err", err)
					}
				}
				continue
			}
			why[p.UID] = err.Error()
		}
		st, _ := d.agent.Status(p.UID)
		if !st.Wanted || (len(p.IPs) == 0 && why[p.UID] == "") {
			// Not in the mesh, or not started yet: its CNI ADD will come.
			continue
		}
		if why[p.UID] == "" {
			why[p.UID] = "no state record, and the host search is off"
		}
		lost = append(lost, LostPod{Pod: p, Reason: why[p.UID]})
		d.log.Error("ambient pod's network namespace not found at start; it stays uncaptured until its sandbox is recreated",
			"pod", p.Namespace+"/"+p.Name, "uid", p.UID, "reason", why[p.UID])
	}
	return lost
}
