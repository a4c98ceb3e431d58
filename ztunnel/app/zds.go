package app

import (
	"context"
	"os"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// startZDS connects to the node agent, which hands over pods.
func (a *App) startZDS(context.Context) error {
	c, err := zds.NewClient(zds.ClientConfig{
		Path:    a.cfg.ZDSSocket,
		Handler: zdsHandler{a},
		Logger:  a.log.With("component", "zds"),
	})
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	a.zds = c
	return nil
}

func (a *App) stopZDS() {
	if a.zds != nil {
		a.zds.Stop()
	}
}

// zdsHandler applies the node agent's requests to the pod proxies.
type zdsHandler struct{ a *App }

// Add starts proxying for a pod. The client closes ns after Add returns, so
// the pod keeps its own duplicate.
func (h zdsHandler) Add(_ context.Context, uid string, info *zdsapi.WorkloadInfo, ns *os.File) error {
	own, err := netns.Dup(ns)
	if err != nil {
		return err
	}
	return h.a.pods.add(uid, info, own)
}

func (h zdsHandler) Del(_ context.Context, uid string) error { return h.a.pods.del(uid) }

// SnapshotSent drops pods the agent no longer has and marks ztunnel ready.
func (h zdsHandler) SnapshotSent(_ context.Context, in map[string]struct{}) error {
	keep := make(map[string]bool, len(in))
	for uid := range in {
		keep[uid] = true
	}
	h.a.pods.keepOnly(keep)
	h.a.zdsSynced.Store(true)
	return nil
}
