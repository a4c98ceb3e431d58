package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// Mode is how a type is subscribed.
type Mode int

const (
	// Wildcard receives every resource of the type.
	Wildcard Mode = iota
	// OnDemand receives only resources asked for with Client.Subscribe.
	OnDemand
)

// TypeConfig declares one resource type the client follows.
type TypeConfig struct {
	// TypeURL, e.g. "type.googleapis.com/istio.workload.Address".
	TypeURL string
	// New returns an empty message of the type, to decode into.
	New func() proto.Message
	// Handler receives the changes. Required.
	Handler Handler
	// Mode of subscription (default Wildcard).
	Mode Mode
}

// Node describes the proxy to the server (node id and metadata).
type Node struct {
	// Kind prefixes the node id (default "ztunnel").
	Kind string
	// IP is the proxy's IP (INSTANCE_IPS).
	IP string
	// PodName and Namespace of the proxy's pod (NAME, NAMESPACE).
	PodName, Namespace string
	// NodeName is the Kubernetes node (NODE_NAME).
	NodeName string
	// Metadata are extra string metadata fields.
	Metadata map[string]string
}

// ID is the node id: "<kind>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local".
func (n Node) ID() string {
	kind := n.Kind
	if kind == "" {
		kind = "ztunnel"
	}
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", kind, n.IP, n.PodName, n.Namespace, n.Namespace)
}

// ControllerKeepalive is the keepalive of a proxy's connections to the
// controller (xDS here, and the apps' CA connection): a controller that
// went away without closing them (a partition, a dead node) is noticed
// within Time+Timeout, not after the kernel's TCP timeouts. The
// controller's gRPC server permits pings this often.
var ControllerKeepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// Backoff bounds reconnect delays: the n-th consecutive failure waits
// about Initial*2^n, capped at Max, with random jitter.
type Backoff struct {
	Initial time.Duration // default 200ms
	Max     time.Duration // default 30s
}

// Config configures a Client.
type Config struct {
	// Address of the controller, in grpc.NewClient target syntax.
	Address string
	// DialOptions (credentials included) for the connection. Required to
	// contain transport credentials, as grpc.NewClient requires.
	DialOptions []grpc.DialOption
	// Node identity and metadata.
	Node Node
	// ClusterID is sent as the "clusterid" gRPC metadata when set.
	ClusterID string
	// Token, when set, is called for every new stream; its result is sent
	// as "authorization: Bearer <token>".
	Token func(ctx context.Context) (string, error)
	// Types the client follows; at least one, each type once.
	Types []TypeConfig
	// Backoff for reconnects.
	Backoff Backoff
	// MaxRecvMsgSize bounds a response (default 256 MiB: a full initial
	// state arrives as one message).
	MaxRecvMsgSize int
	// Logger; nil discards logs.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Address == "" {
		return errors.New("xds: Config.Address is required")
	}
	if len(c.Types) == 0 {
		return errors.New("xds: Config.Types is empty")
	}
	seen := make(map[string]bool)
	for _, t := range c.Types {
		switch {
		case t.TypeURL == "":
			return errors.New("xds: TypeConfig.TypeURL is required")
		case seen[t.TypeURL]:
			return fmt.Errorf("xds: type %s configured twice", t.TypeURL)
		case t.New == nil || t.Handler == nil:
			return fmt.Errorf("xds: type %s needs New and Handler", t.TypeURL)
		case t.Mode != Wildcard && t.Mode != OnDemand:
			return fmt.Errorf("xds: type %s has unknown mode %d", t.TypeURL, t.Mode)
		}
		seen[t.TypeURL] = true
	}
	if c.Backoff.Initial < 0 || c.Backoff.Max < 0 || c.MaxRecvMsgSize < 0 {
		return errors.New("xds: negative Backoff or MaxRecvMsgSize")
	}
	return nil
}
