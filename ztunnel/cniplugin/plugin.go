package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// About is printed by the binary when run without CNI_COMMAND.
const About = "zmesh-cni: chained CNI plugin enrolling pods in the zmesh ambient mesh"

// delTimeout bounds DEL's call to the agent: DEL never fails, so waiting
// long gains nothing.
const delTimeout = 10 * time.Second

// SupportedVersions returns the CNI spec versions the plugin speaks.
func SupportedVersions() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// Plugin carries out CNI commands. Its methods have skel's signature.
type Plugin struct {
	stdout io.Writer
	log    *slog.Logger
}

// New returns a Plugin printing results to stdout and logging to log (nil
// means slog.Default()).
func New(stdout io.Writer, log *slog.Logger) *Plugin {
	if log == nil {
		log = slog.Default()
	}
	return &Plugin{stdout: stdout, log: log}
}

// Main runs the plugin as a CNI binary: it reads the environment and
// stdin, runs the command, prints the result or the CNI error object on
// stdout and exits non-zero on error. Logs go to stderr.
func Main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p := New(os.Stdout, log)
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check}, SupportedVersions(), About)
}

// request parses the configuration and CNI_ARGS of args. pod is nil for a
// sandbox that is not a Kubernetes pod.
func request(args *skel.CmdArgs) (*Config, *PodRequest, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	pa, err := ParseArgs(args.Args)
	if err != nil {
		return conf, nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if !pa.IsKubernetesPod() {
		return conf, nil, nil
	}
	if err := pa.Validate(); err != nil {
		return conf, nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	return conf, &PodRequest{
		UID:              string(pa.K8S_POD_UID),
		Name:             string(pa.K8S_POD_NAME),
		Namespace:        string(pa.K8S_POD_NAMESPACE),
		Netns:            args.Netns,
		ContainerID:      args.ContainerID,
		InfraContainerID: string(pa.K8S_POD_INFRA_CONTAINER_ID),
		IfName:           args.IfName,
	}, nil
}

// Add tells the agent about the pod and prints prevResult. It fails when
// the agent is unreachable or does not accept the pod.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, pod, err := request(args)
	if err != nil {
		return err
	}
	if pod == nil {
		p.log.Info("not a Kubernetes pod; passing through", "containerID", args.ContainerID)
		return p.printResult(conf)
	}
	ips, err := podIPs(conf)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	pod.IPs = ips
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	resp, err := newAgentClient(conf.AgentSocket).call(ctx, PathAdd, pod)
	if err != nil {
		return cniError(fmt.Sprintf("pod %s/%s not added to the zmesh node agent", pod.Namespace, pod.Name), err)
	}
	p.log.Info("pod reported to the node agent", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "enrolled", resp.Enrolled)
	return p.printResult(conf)
}

// Del tells the agent the pod's sandbox is gone. It never fails: problems
// are logged to stderr.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, pod, err := request(args)
	if err != nil {
		p.log.Warn("DEL ignored: bad request", "containerID", args.ContainerID, "err", err)
		return nil
	}
	if pod == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(conf.Timeout, delTimeout))
	defer cancel()
	if _, err := newAgentClient(conf.AgentSocket).call(ctx, PathDel, pod); err != nil {
		p.log.Warn("DEL not delivered to the node agent", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "err", err)
	}
	return nil
}

// Check asks the agent whether the pod is captured as it should be.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, pod, err := request(args)
	if err != nil || pod == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	if _, err := newAgentClient(conf.AgentSocket).call(ctx, PathCheck, pod); err != nil {
		return cniError(fmt.Sprintf("pod %s/%s failed the zmesh check", pod.Namespace, pod.Name), err)
	}
	return nil
}

// cniError turns an agent call's failure into a CNI error: "try again
// later" (11) when the agent was unreachable or unavailable, internal (999)
// otherwise.
func cniError(msg string, err error) error {
	code := types.ErrInternal
	var ae *AgentError
	switch {
	case errors.Is(err, ErrAgentUnreachable), errors.Is(err, context.DeadlineExceeded):
		code = types.ErrTryAgainLater
	case errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable:
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, msg, err.Error())
}

// printResult prints prevResult (an empty result when there is none) in
// the configuration's version.
func (p *Plugin) printResult(conf *Config) error {
	var res types.Result = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		res = conf.PrevResult
	}
	out, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "cannot express prevResult in the config's version", err.Error())
	}
	if err := out.PrintTo(p.stdout); err != nil {
		return types.NewError(types.ErrIOFailure, "writing the result", err.Error())
	}
	return nil
}

// podIPs lists the addresses in prevResult.
func podIPs(conf *Config) ([]string, error) {
	if conf.PrevResult == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("prevResult: %w", err)
	}
	var ips []string
	for _, ip := range res.IPs {
		if ip != nil && ip.Address.IP != nil {
			ips = append(ips, ip.Address.IP.String())
		}
	}
	return ips, nil
}
