package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/certs"
)

// LogLine is one line of GET /v1/logs (newline-delimited JSON).
type LogLine struct {
	ProcessGuid  string    `json:"process_guid,omitempty"`
	Index        int       `json:"index"`
	InstanceGuid string    `json:"instance_guid,omitempty"`
	TaskGuid     string    `json:"task_guid,omitempty"`
	Time         time.Time `json:"time"`
	Source       string    `json:"source"`
	Stream       string    `json:"stream"`
	Text         string    `json:"text"`
}

// MetricsResponse is the body of GET /v1/metrics.
type MetricsResponse struct {
	CellID    string            `json:"cell_id"`
	Instances []InstanceMetrics `json:"instances"`
}

// ContainersResponse is the body of GET /v1/containers.
type ContainersResponse struct {
	CellID     string            `json:"cell_id"`
	Draining   bool              `json:"draining"`
	Containers []ContainerStatus `json:"containers"`
}

// apiError is the body of an error answer, in the BBS's shape.
type apiError struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// listenAPI opens the API's TLS listener and records the address to announce.
func (a *Agent) listenAPI() (*http.Server, net.Listener, error) {
	tlsCfg, err := certs.ServerTLSConfig(a.cfg.API.CAFile, a.cfg.API.CertFile, a.cfg.API.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: api tls: %w", err)
	}
	ln, err := net.Listen("tcp", a.cfg.API.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: api: listen on %s: %w", a.cfg.API.Listen, err)
	}
	a.mu.Lock()
	a.advertise = advertiseAddress(a.cfg.API, ln.Addr())
	a.mu.Unlock()
	srv := &http.Server{Handler: a.APIHandler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	return srv, tls.NewListener(ln, tlsCfg), nil
}

// serveAPI serves until ctx ends; open log streams end with it.
func (a *Agent) serveAPI(ctx context.Context, srv *http.Server, ln net.Listener) {
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	a.log.Info("agent API listening", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("agent API stopped", "error", err)
	}
	<-done
}

// APIHandler is the agent's HTTP API. Every route requires a verified client certificate with
// CommonName "operator" (the TLS layer verifies it against the BBS CA).
func (a *Agent) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/containers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ContainersResponse{CellID: a.cfg.CellID, Draining: a.Draining(), Containers: a.Containers()})
	})
	mux.HandleFunc("GET /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		ms, err := a.Metrics(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, "Internal", "sampling container metrics: "+err.Error())
			return
		}
		if ms == nil {
			ms = []InstanceMetrics{}
		}
		writeJSON(w, http.StatusOK, MetricsResponse{CellID: a.cfg.CellID, Instances: ms})
	})
	mux.HandleFunc("GET /v1/logs", a.serveLogs)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NotFound", "no route "+r.Method+" "+r.URL.Path)
	})
	return operatorOnly(mux)
}

// operatorOnly admits requests whose verified client certificate names the operator.
func operatorOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			writeError(w, http.StatusUnauthorized, "Unauthenticated", "a client certificate of the cluster CA is required")
			return
		}
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		if cn != certs.RoleOperator {
			writeError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("%q may not use the agent API; the operator may", cn))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	var e apiError
	e.Error.Type, e.Error.Message = typ, msg
	writeJSON(w, status, e)
}

// logSource is one log to read: its key and whose it is.
type logSource struct {
	key          string
	processGuid  string
	index        int
	instanceGuid string
	taskGuid     string
}

// logSources lists the logs of process_guid (optionally one index) or of task_guid: those of
// the live containers and of the ones that ended since the agent started.
func (a *Agent) logSources(processGuid string, index int, taskGuid string) []logSource {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []logSource
	for key, o := range a.logOwners {
		switch {
		case taskGuid != "" && o.taskGuid == taskGuid,
			processGuid != "" && o.processGuid == processGuid && (index < 0 || o.index == index):
			o.key = key
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].index < out[j].index || out[i].index == out[j].index && out[i].key < out[j].key
	})
	return out
}

// serveLogs streams the log lines of an LRP's instances (?process_guid=&index=) or of a task
// (?task_guid=) as newline-delimited LogLine JSON; with ?follow=true it keeps streaming new
// lines until the client goes away.
func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	processGuid, taskGuid := q.Get("process_guid"), q.Get("task_guid")
	if (processGuid == "") == (taskGuid == "") {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "give exactly one of process_guid and task_guid")
		return
	}
	index := -1
	if v := q.Get("index"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "InvalidRequest", fmt.Sprintf("index=%q is not a whole number ≥ 0", v))
			return
		}
		index = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "InvalidRequest", fmt.Sprintf("follow=%q is not a boolean", v))
			return
		}
		follow = b
	}
	sources := a.logSources(processGuid, index, taskGuid)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	emit := func(s logSource, l logs.Line) error {
		mu.Lock()
		defer mu.Unlock()
		err := enc.Encode(LogLine{ProcessGuid: s.processGuid, Index: s.index, InstanceGuid: s.instanceGuid, TaskGuid: s.taskGuid,
			Time: l.Time, Source: l.Source, Stream: string(l.Stream), Text: l.Text})
		if err == nil && flusher != nil && follow {
			flusher.Flush()
		}
		return err
	}
	if !follow {
		// Merge the instances' lines in time order.
		type tl struct {
			s logSource
			l logs.Line
		}
		var all []tl
		for _, s := range sources {
			err := a.logs.Read(r.Context(), s.key, false, func(l logs.Line) error {
				all = append(all, tl{s, l})
				return nil
			})
			if err != nil && !logs.IsNotFound(err) {
				a.log.Warn("reading a log", "key", s.key, "error", err)
			}
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].l.Time.Before(all[j].l.Time) })
		for _, x := range all {
			if emit(x.s, x.l) != nil {
				return
			}
		}
		return
	}
	if flusher != nil {
		flusher.Flush()
	}
	var wg sync.WaitGroup
	for _, s := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.logs.Read(r.Context(), s.key, true, func(l logs.Line) error { return emit(s, l) })
			if err != nil && !logs.IsNotFound(err) && r.Context().Err() == nil {
				a.log.Debug("following a log", "key", s.key, "error", err)
			}
		}()
	}
	wg.Wait()
	<-r.Context().Done()
}
