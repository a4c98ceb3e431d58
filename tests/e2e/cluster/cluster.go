package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// MaxNodes is the largest node count a Cluster accepts (node IPs are
// 172.30.0.11 .. 172.30.0.(10+MaxNodes)).
const MaxNodes = 200

// ControlPlaneIP is the address of the optional control-plane namespace on
// the node network.
var ControlPlaneIP = netip.MustParseAddr("172.30.0.2")

// NodeNetwork is the node network on the fabric bridge.
var NodeNetwork = netip.MustParsePrefix("172.30.0.0/24")

// PodNetwork holds every node's pod CIDR.
var PodNetwork = netip.MustParsePrefix("10.244.0.0/16")

// Options configure a Cluster. The zero value is a two-node cluster.
type Options struct {
	// Nodes is the number of nodes (1..MaxNodes); 0 means 2.
	Nodes int
	// Prefix starts every namespace and directory name; DefaultPrefix if
	// empty. Lowercase letters, digits, '-' and '_', at most 32 bytes.
	Prefix string
	// ControlPlane adds a namespace on the node network at ControlPlaneIP,
	// with routes to every pod CIDR, for processes all nodes must reach.
	ControlPlane bool
	// WorkDir is the parent of the cluster's work directory (logs,
	// manifests); os.TempDir() if empty.
	WorkDir string
	// KeepWorkDir leaves the work directory (and the logs in it) in place
	// on Close. A kept directory under os.TempDir() is still removed by a
	// later Cleanup with the same prefix once this process has exited.
	KeepWorkDir bool
	// StopTimeout is the SIGTERM→SIGKILL grace period for processes;
	// DefaultStopTimeout if zero.
	StopTimeout time.Duration
	// Logger receives progress messages; slog.Default() if nil.
	Logger *slog.Logger
}

// Node is one simulated node: a namespace on the node network.
type Node struct {
	// Name is "node<Index>", the Kubernetes node name.
	Name string
	// Index is 1-based.
	Index int
	// IP is 172.30.0.(10+Index), on the node's eth0.
	IP netip.Addr
	// PodCIDR is 10.244.<Index>.0/24.
	PodCIDR netip.Prefix
	// Gateway is 10.244.<Index>.1, the pods' default gateway (the node
	// end of every pod veth carries it).
	Gateway netip.Addr
	// Netns is the node's namespace.
	Netns Netns

	// Guarded by Cluster.mu.
	usedIPs  map[netip.Addr]bool
	vethSeq  int
	podCount int
}

type state int

const (
	stateNew state = iota
	stateStarted
	stateClosed
)

// Cluster is a set of simulated nodes and pods. Create with New, build
// with Start, tear down with Close. Methods are safe for concurrent use.
type Cluster struct {
	opts   Options
	id     string
	log    *slog.Logger
	nodes  []*Node
	fabric Netns
	cp     Netns

	mu        sync.Mutex
	state     state
	workDir   string
	netnses   []Netns // every namespace created, in creation order
	pods      map[string]*Pod
	procs     map[string]*Process
	captures  map[*Capture]bool
	closeErr  error
	closeOnce sync.Once
}

// New validates opts and allocates a Cluster; it creates nothing on the
// machine (see Start).
func New(opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("cluster: %d nodes, want 1..%d", opts.Nodes, MaxNodes)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !validPrefix(opts.Prefix) {
		return nil, fmt.Errorf("cluster: invalid prefix %q", opts.Prefix)
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.WorkDir == "" {
		opts.WorkDir = os.TempDir()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	id, err := newRunID(opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{
		opts:     opts,
		id:       id,
		log:      log.With("cluster", id),
		fabric:   Netns{Name: id + "-fabric", Path: filepath.Join(netnsDir, id+"-fabric")},
		pods:     make(map[string]*Pod),
		procs:    make(map[string]*Process),
		captures: make(map[*Capture]bool),
	}
	if opts.ControlPlane {
		c.cp = Netns{Name: id + "-cp", Path: filepath.Join(netnsDir, id+"-cp")}
	}
	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		c.nodes = append(c.nodes, &Node{
			Name:    name,
			Index:   i,
			IP:      nodeIP(i),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			Gateway: netip.AddrFrom4([4]byte{10, 244, byte(i), 1}),
			Netns:   Netns{Name: id + "-" + name, Path: filepath.Join(netnsDir, id+"-"+name)},
			usedIPs: make(map[netip.Addr]bool),
		})
	}
	return c, nil
}

func nodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + i)}) }

// ID returns "<prefix>-<pid>-<random>", the stem of every name the cluster
// creates.
func (c *Cluster) ID() string { return c.id }

// Nodes returns the nodes in index order.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Node returns the node with this name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Fabric returns the namespace holding the bridge between nodes.
func (c *Cluster) Fabric() Netns { return c.fabric }

// ControlPlane returns the control-plane namespace (at ControlPlaneIP), or
// the zero Netns when Options.ControlPlane is off.
func (c *Cluster) ControlPlane() Netns { return c.cp }

// WorkDir returns the cluster's work directory (empty before Start).
func (c *Cluster) WorkDir() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workDir
}

// LogDir returns the directory holding process logs (empty before Start).
func (c *Cluster) LogDir() string {
	wd := c.WorkDir()
	if wd == "" {
		return ""
	}
	return filepath.Join(wd, "logs")
}

// Start creates the work directory, the fabric, the nodes and (if asked)
// the control-plane namespace. On error everything created so far is
// removed again; the Cluster must then only be closed.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.state != stateNew {
		c.mu.Unlock()
		return errors.New("cluster: Start called twice or after Close")
	}
	c.state = stateStarted
	c.mu.Unlock()
	if err := c.build(ctx); err != nil {
		c.mu.Lock()
		c.state = stateClosed
		c.mu.Unlock()
		return errors.Join(fmt.Errorf("cluster: start: %w", err), c.teardown())
	}
	c.log.Info("cluster: started", "nodes", len(c.nodes), "workdir", c.WorkDir())
	return nil
}

func (c *Cluster) build(ctx context.Context) error {
	wd, err := os.MkdirTemp(c.opts.WorkDir, c.id+"-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	c.mu.Lock()
	c.workDir = wd
	c.mu.Unlock()
	if err := os.MkdirAll(filepath.Join(wd, "logs"), 0o755); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	if err := c.newNetns(c.fabric); err != nil {
		return err
	}
	if err := setupFabric(c.fabric); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.newNetns(n.Netns); err != nil {
			return err
		}
		if err := attachToFabric(c.fabric, n.Netns, fmt.Sprintf("n%d", n.Index), n.IP); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := setupNodeSysctls(n.Netns); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	for _, n := range c.nodes {
		var routes []podRoute
		for _, m := range c.nodes {
			if m != n {
				routes = append(routes, podRoute{cidr: m.PodCIDR, via: m.IP})
			}
		}
		if err := addRoutes(n.Netns, routes); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if !c.cp.IsZero() {
		if err := c.newNetns(c.cp); err != nil {
			return err
		}
		if err := attachToFabric(c.fabric, c.cp, "cp", ControlPlaneIP); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		var routes []podRoute
		for _, m := range c.nodes {
			routes = append(routes, podRoute{cidr: m.PodCIDR, via: m.IP})
		}
		if err := addRoutes(c.cp, routes); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
	}
	return nil
}

// newNetns creates n and records it for teardown.
func (c *Cluster) newNetns(n Netns) error {
	if _, err := createNetns(n.Name); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		// Close ran meanwhile and will not see this one.
		return errors.Join(errors.New("cluster: closed"), deleteNetns(n))
	}
	c.netnses = append(c.netnses, n)
	return nil
}

// requireStarted returns an error unless Start succeeded and Close has not
// been called. Callers hold c.mu.
func (c *Cluster) requireStartedLocked() error {
	switch c.state {
	case stateNew:
		return errors.New("cluster: not started")
	case stateClosed:
		return errors.New("cluster: closed")
	}
	return nil
}

// StartProcess starts spec inside spec.Netns with stdout and stderr in
// LogDir()/<name>.log. The cluster stops it on Close.
func (c *Cluster) StartProcess(spec ProcessSpec) (*Process, error) {
	if spec.Name == "" || filepath.Base(spec.Name) != spec.Name {
		return nil, fmt.Errorf("cluster: process name %q must be a plain file name", spec.Name)
	}
	if spec.Path == "" {
		return nil, fmt.Errorf("cluster: process %s: no path", spec.Name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.requireStartedLocked(); err != nil {
		return nil, err
	}
	if _, dup := c.procs[spec.Name]; dup {
		return nil, fmt.Errorf("cluster: process %s already exists", spec.Name)
	}
	logPath := filepath.Join(c.workDir, "logs", spec.Name+".log")
	p, err := startProcess(spec, logPath, c.workDir, c.opts.StopTimeout)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.procs[spec.Name] = p
	c.log.Debug("cluster: process started", "name", spec.Name, "pid", p.Pid(), "netns", spec.Netns.Name)
	return p, nil
}

// Process returns the process started under this name, or nil.
func (c *Cluster) Process(name string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

// Processes returns every process started, sorted by name.
func (c *Cluster) Processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Process, 0, len(c.procs))
	for _, p := range c.procs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// StopProcess stops the named process (see Process.Stop) and forgets it,
// so the name can be reused.
func (c *Cluster) StopProcess(name string) error {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("cluster: no process %s", name)
	}
	return p.Stop()
}

// Run runs spec (Name and StopTimeout unused) to completion inside
// spec.Netns and returns its combined stdout and stderr. Cancelling ctx
// kills it.
func (c *Cluster) Run(ctx context.Context, spec ProcessSpec) ([]byte, error) {
	if spec.Path == "" {
		return nil, errors.New("cluster: run: no path")
	}
	out, err := runCommand(ctx, spec, c.WorkDir())
	if err != nil {
		return out, fmt.Errorf("cluster: %w", err)
	}
	return out, nil
}

// Close stops every process the cluster started (SIGTERM, SIGKILL after
// the stop timeout), kills any other process left inside its namespaces,
// stops captures, deletes every namespace (and with it every link and
// route) and removes the work directory unless KeepWorkDir is set. It
// waits for all of it and is safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.state = stateClosed
		c.mu.Unlock()
		c.closeErr = c.teardown()
		if c.closeErr != nil {
			c.log.Warn("cluster: close", "err", c.closeErr)
		} else {
			c.log.Info("cluster: closed")
		}
	})
	return c.closeErr
}

// teardown removes everything created so far.
func (c *Cluster) teardown() error {
	c.mu.Lock()
	procs := make([]*Process, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.procs = make(map[string]*Process)
	caps := make([]*Capture, 0, len(c.captures))
	for cp := range c.captures {
		caps = append(caps, cp)
	}
	c.captures = make(map[*Capture]bool)
	nss := c.netnses
	c.netnses = nil
	c.pods = make(map[string]*Pod)
	wd := c.workDir
	c.mu.Unlock()

	var errs []error
	for _, cp := range caps {
		_, _ = cp.Stop()
	}
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, p := range procs {
		reported := p.stopCalled.Load()
		wg.Go(func() {
			// An error an earlier Stop already returned is not repeated.
			if err := p.Stop(); err != nil && !reported {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	// Pods first, then nodes, then the fabric: reverse creation order.
	for i, j := 0, len(nss)-1; i < j; i, j = i+1, j-1 {
		nss[i], nss[j] = nss[j], nss[i]
	}
	if err := removeNetnses(nss, time.Second); err != nil {
		errs = append(errs, err)
	}
	if wd != "" && !c.opts.KeepWorkDir {
		if err := os.RemoveAll(wd); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	}
	return errors.Join(errs...)
}
