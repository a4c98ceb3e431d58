package echo

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
)

// maxDelay bounds the ?delay= a request may ask for.
const maxDelay = 30 * time.Second

// handler answers every request with a Report.
//
// A WebSocket upgrade of /ws is accepted: the first message is the
// handshake request's Report (JSON), then each text message m is answered
// with "<pod>:m".
//
// Request controls: a path of the form /status/<code> sets the response
// status; ?delay=<duration> delays the answer (at most maxDelay), and
// with ?delay_on=<pod>[,<pod>...] only on the pods listed;
// Accept: application/json or ?format=json selects JSON.
type handler struct {
	pod, namespace string
	port           int
	log            *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := &Report{
		Pod:       h.pod,
		Namespace: h.namespace,
		Port:      h.port,
		Method:    r.Method,
		Path:      r.URL.Path,
		Host:      r.Host,
		Peer:      r.RemoteAddr,
		Headers:   make(map[string]string, len(r.Header)),
	}
	for k, v := range r.Header {
		rep.Headers[k] = strings.Join(v, ", ")
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		info, err := describeConn(c)
		if err != nil {
			h.log.Warn("echo: PROXY header", "err", err)
		}
		rep.Peer = info.peer
		rep.SocketPeer = info.socketPeer
		rep.Local = info.local
		rep.ProxyProtocol = info.proxied
		rep.Identity = info.header.Identity
		rep.Service = info.header.Service
		if info.proxied && info.header.Destination.IsValid() {
			rep.ProxyDestination = info.header.Destination.String()
		}
	}

	if r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		serveWebSocket(w, r, rep)
		return
	}

	status := http.StatusOK
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		if n, err := strconv.Atoi(code); err == nil && n >= 200 && n <= 599 {
			status = n
		}
	}
	if d := r.URL.Query().Get("delay"); d != "" && h.delayed(r.URL.Query().Get("delay_on")) {
		if dur, err := time.ParseDuration(d); err == nil && dur > 0 {
			t := time.NewTimer(min(dur, maxDelay))
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
	}

	body, ctype := rep.Text(), "text/plain; charset=utf-8"
	if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		body, ctype = rep.JSON(), "application/json"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Echo-Pod", h.pod)
	w.WriteHeader(status)
	w.Write(body)
}

// delayed reports whether a ?delay applies to this pod given ?delay_on
// (empty: every pod).
func (h *handler) delayed(on string) bool {
	if on == "" {
		return true
	}
	for p := range strings.SplitSeq(on, ",") {
		if strings.TrimSpace(p) == h.pod {
			return true
		}
	}
	return false
}

// serveWebSocket runs the /ws session described on handler.
func serveWebSocket(w http.ResponseWriter, r *http.Request, rep *Report) {
	websocket.Server{Handler: func(ws *websocket.Conn) {
		if err := websocket.Message.Send(ws, string(rep.JSON())); err != nil {
			return
		}
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, rep.Pod+":"+msg); err != nil {
				return
			}
		}
	}}.ServeHTTP(w, r)
}
