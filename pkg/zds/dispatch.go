package zds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// Handler is ztunnel's reaction to the agent's requests. Each method's
// error becomes the Ack's error text (nil: success). Methods are called one
// at a time from the client's goroutine; ctx ends when the client stops.
type Handler interface {
	// Add starts (or refreshes) proxying for pod uid, whose network
	// namespace is netns. The client closes netns after Add returns; a
	// handler that needs the namespace longer keeps a duplicate
	// (netns.Dup).
	Add(ctx context.Context, uid string, info *zdsapi.WorkloadInfo, netns *os.File) error
	// Del stops proxying for pod uid.
	Del(ctx context.Context, uid string) error
	// SnapshotSent ends a replay: inSnapshot holds every uid the agent sent
	// (as add or keep) since this connection began. ztunnel should drop the
	// pods it runs that are not in it.
	SnapshotSent(ctx context.Context, inSnapshot map[string]struct{}) error
}

// KeepHandler is optionally implemented by a Handler that wants to hear
// about "keep" (the agent vouches for a pod it did not resend). Without it a
// keep only marks the uid as part of the snapshot.
type KeepHandler interface {
	Keep(ctx context.Context, uid string) error
}

// dispatcher decodes requests for one connection and tracks the snapshot.
type dispatcher struct {
	h        Handler
	log      *slog.Logger
	snapshot map[string]struct{} // nil after snapshot_sent
}

func newDispatcher(h Handler, log *slog.Logger) *dispatcher {
	return &dispatcher{h: h, log: log, snapshot: map[string]struct{}{}}
}

// handle decodes one datagram, calls the handler and returns the Ack error
// text. It closes every descriptor in d on every path.
func (st *dispatcher) handle(ctx context.Context, d *datagram) string {
	defer d.closeFiles()
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(d.payload, &req); err != nil {
		st.log.Warn("undecodable request from node agent", "err", err)
		return fmt.Sprintf("zds: undecodable request: %v", err)
	}
	if add, ok := req.Payload.(*zdsapi.WorkloadRequest_Add); ok {
		return st.add(ctx, add.Add, d.files)
	}
	if len(d.files) > 0 {
		return fmt.Sprintf("zds: unexpected %d file descriptor(s) with %T", len(d.files), req.Payload)
	}
	switch p := req.Payload.(type) {
	case *zdsapi.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		if uid == "" {
			return "zds: del without uid"
		}
		return errText(st.h.Del(ctx, uid))
	case *zdsapi.WorkloadRequest_Keep:
		uid := p.Keep.GetUid()
		if uid == "" {
			return "zds: keep without uid"
		}
		if st.snapshot != nil {
			st.snapshot[uid] = struct{}{}
		}
		if kh, ok := st.h.(KeepHandler); ok {
			return errText(kh.Keep(ctx, uid))
		}
		return ""
	case *zdsapi.WorkloadRequest_SnapshotSent:
		if st.snapshot == nil {
			// The protocol sends one per connection. Passing on an empty set
			// would make ztunnel drop every pod, so refuse instead.
			return "zds: duplicate snapshot_sent on one connection"
		}
		inSnapshot := st.snapshot
		st.snapshot = nil
		return errText(st.h.SnapshotSent(ctx, inSnapshot))
	default:
		return "zds: empty or unknown request"
	}
}

func (st *dispatcher) add(ctx context.Context, add *zdsapi.AddWorkload, files []*os.File) string {
	uid := add.GetUid()
	if uid == "" {
		return "zds: add without uid"
	}
	// The agent counts the pod as enrolled whatever its descriptor's fate.
	if st.snapshot != nil {
		st.snapshot[uid] = struct{}{}
	}
	if len(files) != 1 {
		return fmt.Sprintf("zds: add for %s carried %d file descriptors, want 1 (the pod network namespace)", uid, len(files))
	}
	if err := netns.Verify(files[0]); err != nil {
		return fmt.Sprintf("zds: add for %s: descriptor is not usable: %v", uid, err)
	}
	return errText(st.h.Add(ctx, uid, add.GetWorkloadInfo(), files[0]))
}

// ack sends a WorkloadResponse with the given error text.
func (st *dispatcher) ack(c *net.UnixConn, errText string) error {
	return writeMessage(c, &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{
		Ack: &zdsapi.Ack{Error: errText},
	}}, nil)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	if err.Error() == "" {
		return "error"
	}
	return err.Error()
}
