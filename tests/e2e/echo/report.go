package echo

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Report is what the HTTP server answers: who served the request and what
// it saw.
type Report struct {
	// Pod and Namespace name the serving pod (from the server's config).
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	// Port is the listener's configured port.
	Port int `json:"port"`
	// Method, Path and Host come from the request.
	Method string `json:"method"`
	Path   string `json:"path"`
	Host   string `json:"host"`
	// Peer is the client address as the app sees it: the PROXY header's
	// source when one was received, else the socket's peer.
	Peer string `json:"peer"`
	// SocketPeer is the TCP peer of the accepted socket.
	SocketPeer string `json:"socket_peer"`
	// Local is the socket's local address.
	Local string `json:"local"`
	// ProxyProtocol is true when the connection began with a PROXY header.
	ProxyProtocol bool `json:"proxy_protocol"`
	// ProxyDestination is the PROXY header's destination ("" without one).
	ProxyDestination string `json:"proxy_destination,omitempty"`
	// Identity is the peer's SPIFFE identity from the PROXY header's TLV
	// 0xD0, "" when unknown.
	Identity string `json:"identity"`
	// Service is the service hostname from TLV 0xD1, "" when absent.
	Service string `json:"service,omitempty"`
	// Headers holds the request headers (values joined with ", ").
	Headers map[string]string `json:"headers,omitempty"`
}

// text keys in output order; headers follow as "header.<Name>=<value>".
const (
	keyPod           = "pod"
	keyNamespace     = "namespace"
	keyPort          = "port"
	keyMethod        = "method"
	keyPath          = "path"
	keyHost          = "host"
	keyPeer          = "peer"
	keySocketPeer    = "socket_peer"
	keyLocal         = "local"
	keyProxyProtocol = "proxy_protocol"
	keyProxyDest     = "proxy_destination"
	keyIdentity      = "identity"
	keyService       = "service"
	headerPrefix     = "header."
)

// Text renders r as "key=value" lines, one field per line, headers last
// and sorted.
func (r *Report) Text() []byte {
	var b bytes.Buffer
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	kv(keyPod, r.Pod)
	kv(keyNamespace, r.Namespace)
	kv(keyPort, strconv.Itoa(r.Port))
	kv(keyMethod, r.Method)
	kv(keyPath, r.Path)
	kv(keyHost, r.Host)
	kv(keyPeer, r.Peer)
	kv(keySocketPeer, r.SocketPeer)
	kv(keyLocal, r.Local)
	kv(keyProxyProtocol, strconv.FormatBool(r.ProxyProtocol))
	kv(keyProxyDest, r.ProxyDestination)
	kv(keyIdentity, r.Identity)
	kv(keyService, r.Service)
	names := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		kv(headerPrefix+k, r.Headers[k])
	}
	return b.Bytes()
}

// JSON renders r as one JSON object followed by a newline.
func (r *Report) JSON() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Report has only strings, ints, bools and a string map.
		panic(fmt.Sprintf("echo: marshal report: %v", err))
	}
	return append(b, '\n')
}

// ParseReport reads a report in either form. In the text form, lines that
// are not "key=value" and unknown keys are ignored, so output with extra
// lines (the client's "status=" line, say) parses too.
func ParseReport(b []byte) (*Report, error) {
	trimmed := bytes.TrimSpace(b)
	if bytes.HasPrefix(trimmed, []byte("{")) {
		var r Report
		if err := json.Unmarshal(trimmed, &r); err != nil {
			return nil, fmt.Errorf("echo: parse JSON report: %w", err)
		}
		return &r, nil
	}
	r := &Report{}
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		seen = seen || k == keyPod
		switch {
		case k == keyPod:
			r.Pod = v
		case k == keyNamespace:
			r.Namespace = v
		case k == keyPort:
			r.Port, _ = strconv.Atoi(v)
		case k == keyMethod:
			r.Method = v
		case k == keyPath:
			r.Path = v
		case k == keyHost:
			r.Host = v
		case k == keyPeer:
			r.Peer = v
		case k == keySocketPeer:
			r.SocketPeer = v
		case k == keyLocal:
			r.Local = v
		case k == keyProxyProtocol:
			r.ProxyProtocol = v == "true"
		case k == keyProxyDest:
			r.ProxyDestination = v
		case k == keyIdentity:
			r.Identity = v
		case k == keyService:
			r.Service = v
		case strings.HasPrefix(k, headerPrefix):
			if r.Headers == nil {
				r.Headers = make(map[string]string)
			}
			r.Headers[strings.TrimPrefix(k, headerPrefix)] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("echo: parse report: %w", err)
	}
	if !seen {
		return nil, fmt.Errorf("echo: no report in %q", truncate(b, 200))
	}
	return r, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
