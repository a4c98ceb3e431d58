package workloadapi

import "fmt"

// CheckWorkloadEnums reports the first of w's enum fields (tunnel_protocol,
// status, network_mode) whose value this version does not know. A consumer
// must not read an unknown value as the default: a newer controller may
// mean something the consumer cannot honour.
func CheckWorkloadEnums(w *Workload) error {
	if _, ok := TunnelProtocol_name[int32(w.GetTunnelProtocol())]; !ok {
		return fmt.Errorf("unknown tunnel_protocol %d", w.GetTunnelProtocol())
	}
	if _, ok := WorkloadStatus_name[int32(w.GetStatus())]; !ok {
		return fmt.Errorf("unknown status %d", w.GetStatus())
	}
	if _, ok := NetworkMode_name[int32(w.GetNetworkMode())]; !ok {
		return fmt.Errorf("unknown network_mode %d", w.GetNetworkMode())
	}
	return nil
}
