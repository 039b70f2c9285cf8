package bbs

import (
	"context"
	"net/http"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
)

// handlerFunc is a route handler: it writes a success answer itself and returns errors for the
// wrapper to answer in the API's error format.
type handlerFunc func(w http.ResponseWriter, r *http.Request, id certs.Identity) error

// routes builds the mux. The role sets follow DESIGN §2: reads are open to every authenticated
// role, desired work is the operator's, placement and repair the brain's (the operator may step
// in), and instance and task transitions belong to the cell they run on.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	const brainOrOperator = allowBrain | allowOperator

	mux.HandleFunc("GET /healthz", s.health)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, reqErr(models.ErrNotFound, "no route %s %s", r.Method, r.URL.Path))
	})

	s.handle(mux, "GET /v1/info", anyRole, s.info)

	s.handle(mux, "POST /v1/desired_lrps", allowOperator, s.desireLRP)
	s.handle(mux, "GET /v1/desired_lrps", anyRole, s.desiredLRPs)
	s.handle(mux, "GET /v1/desired_lrps/{guid}", anyRole, s.desiredLRP)
	s.handle(mux, "PATCH /v1/desired_lrps/{guid}", allowOperator, s.updateDesiredLRP)
	s.handle(mux, "DELETE /v1/desired_lrps/{guid}", allowOperator, s.removeDesiredLRP)

	s.handle(mux, "GET /v1/actual_lrps", anyRole, s.actualLRPs)
	s.handle(mux, "GET /v1/actual_lrps/{guid}/{index}", anyRole, s.actualLRPGroup)
	s.handle(mux, "DELETE /v1/actual_lrps/{guid}/{index}", allowOperator, s.restartActualLRPInstance)
	s.handle(mux, "POST /v1/actual_lrps/batch", brainOrOperator, s.applyActualLRPOps)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/unclaimed", brainOrOperator, s.createUnclaimedActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/place", brainOrOperator, s.placeActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/fail_placement", brainOrOperator, s.failActualLRPPlacement)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/restart", brainOrOperator, s.restartActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/retire", brainOrOperator, s.retireActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/suspect", brainOrOperator, s.markActualLRPSuspect)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/claim", allowCell, s.claimActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/start", allowCell, s.startActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/crash", allowCell, s.crashActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/reject", allowCell, s.rejectActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/remove", allowCell, s.removeActualLRP)
	s.handle(mux, "POST /v1/actual_lrps/{guid}/{index}/evacuate", allowCell, s.evacuateActualLRP)

	s.handle(mux, "POST /v1/tasks", allowOperator, s.desireTask)
	s.handle(mux, "GET /v1/tasks", anyRole, s.tasks)
	s.handle(mux, "GET /v1/tasks/{guid}", anyRole, s.task)
	s.handle(mux, "DELETE /v1/tasks/{guid}", brainOrOperator, s.deleteTask)
	s.handle(mux, "POST /v1/tasks/{guid}/cancel", allowOperator, s.cancelTask)
	s.handle(mux, "POST /v1/tasks/{guid}/resolve", brainOrOperator, s.resolvingTask)
	s.handle(mux, "POST /v1/tasks/{guid}/place", brainOrOperator, s.placeTask)
	s.handle(mux, "POST /v1/tasks/{guid}/fail_placement", brainOrOperator, s.failTaskPlacement)
	s.handle(mux, "POST /v1/tasks/{guid}/fail", brainOrOperator, s.failTask)
	s.handle(mux, "POST /v1/tasks/{guid}/unresolve", brainOrOperator, s.unresolveTask)
	s.handle(mux, "POST /v1/tasks/{guid}/start", allowCell, s.startTask)
	s.handle(mux, "POST /v1/tasks/{guid}/reject", allowCell, s.rejectTask)
	s.handle(mux, "POST /v1/tasks/{guid}/complete", allowCell, s.completeTask)

	s.handle(mux, "GET /v1/cells", anyRole, s.cells)
	s.handle(mux, "GET /v1/cells/{id}", anyRole, s.cell)
	s.handle(mux, "PUT /v1/cells/{id}/presence", allowCell, s.heartbeat)
	s.handle(mux, "DELETE /v1/cells/{id}", anyRole, s.removeCell)
	s.handle(mux, "POST /v1/cells/{id}/drain", allowOperator, s.drainCell)

	s.handle(mux, "PUT /v1/domains/{name}", allowOperator, s.upsertDomain)
	s.handle(mux, "GET /v1/domains", anyRole, s.domains)

	s.handle(mux, "PUT /v1/locks/{name}", brainOrOperator, s.acquireLock)
	s.handle(mux, "DELETE /v1/locks/{name}", brainOrOperator, s.releaseLock)
	s.handle(mux, "GET /v1/locks/{name}", anyRole, s.lockOwner)

	s.handle(mux, "GET /v1/events", anyRole, s.events)
	return mux
}

// handle registers h under pattern behind authentication and the role check.
func (s *Server) handle(mux *http.ServeMux, pattern string, allowed roles, h handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if info, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
			info.identity = id.String()
		}
		if !allowed.admits(id) {
			s.writeError(w, r, reqErr(models.ErrForbidden, "%s may not call %s", id, pattern))
			return
		}
		if err := h(w, r, id); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// healthTimeout bounds the store probe of GET /healthz.
const healthTimeout = 3 * time.Second

// health answers 200 when the store answers, 503 otherwise. It needs no identity.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	rev, err := s.store.Revision(ctx)
	if err != nil {
		s.writeError(w, r, unavailable(err))
		return
	}
	s.writeJSON(w, http.StatusOK, client.HealthResponse{Status: "ok", Revision: rev})
}

// unavailable classes an unclassified store failure as Unavailable (the store could not answer).
func unavailable(err error) error {
	if models.ErrorType(err) != "Internal" {
		return err
	}
	return &classified{class: models.ErrUnavailable, err: err}
}

// classified adds a class to an error while keeping its text and chain.
type classified struct {
	class error
	err   error
}

func (e *classified) Error() string   { return e.class.Error() + ": " + e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.class, e.err} }

func (s *Server) info(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	rev, err := s.store.Revision(r.Context())
	if err != nil {
		return unavailable(err)
	}
	s.writeJSON(w, http.StatusOK, client.InfoResponse{Version: s.cfg.Version, Identity: id, Revision: rev})
	return nil
}
