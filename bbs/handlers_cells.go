package bbs

import (
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// minPresenceTTL is the shortest presence lease a heartbeat may ask for (etcd's lease floor).
const minPresenceTTL = time.Second

// ---- Cells ----

func (s *Server) cells(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	cells, rev, err := s.store.Cells(r.Context())
	if err != nil {
		return err
	}
	if cells == nil {
		cells = []*models.CellPresence{}
	}
	s.writeJSON(w, http.StatusOK, client.CellsResponse{Cells: cells, Revision: rev})
	return nil
}

func (s *Server) cell(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	c, err := s.store.Cell(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, c)
	return nil
}

// heartbeat stores the presence of the calling cell under a lease of ?ttl_ms= (default
// cfg.PresenceTTL). The path, the body's cell_id (filled in when empty) and the caller must all
// name the same cell.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	cellID := r.PathValue("id")
	if err := actAsCell(id, &cellID); err != nil {
		return err
	}
	ttl := s.cfg.PresenceTTL
	if v := r.URL.Query().Get("ttl_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return reqErr(ErrInvalidRequest, "query parameter ttl_ms=%q is not an integer", v)
		}
		ttl = time.Duration(ms) * time.Millisecond
		if ttl < minPresenceTTL || ttl > s.cfg.MaxPresenceTTL {
			return reqErr(ErrInvalidRequest, "ttl_ms=%d must be between %d and %d", ms, minPresenceTTL.Milliseconds(), s.cfg.MaxPresenceTTL.Milliseconds())
		}
	}
	var p models.CellPresence
	if err := s.decode(w, r, &p, false); err != nil {
		return err
	}
	if p.CellID == "" {
		p.CellID = cellID
	}
	if p.CellID != cellID {
		return reqErr(models.ErrForbidden, "%s may not heartbeat as cell %q", id, p.CellID)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := s.store.Heartbeat(r.Context(), &p, ttl); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeCell revokes a cell's presence at once: the operator or the brain for any cell, a cell
// for itself (an agent leaving cleanly).
func (s *Server) removeCell(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	cellID := r.PathValue("id")
	if id.Role == certs.RoleCell {
		if err := actAsCell(id, &cellID); err != nil {
			return err
		}
	}
	if err := s.store.RemoveCell(r.Context(), cellID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- Domains ----

func (s *Server) upsertDomain(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	name := r.PathValue("name")
	if err := models.ValidateDomainName("name", name); err != nil {
		return err
	}
	var req client.DomainRequest
	if err := s.decode(w, r, &req, true); err != nil {
		return err
	}
	if req.TTLSeconds < 0 {
		return &models.FieldError{Field: "ttl_seconds", Reason: "must not be negative"}
	}
	if err := s.store.UpsertDomain(r.Context(), name, time.Duration(req.TTLSeconds)*time.Second); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) domains(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	ds, err := s.store.Domains(r.Context())
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []*models.Domain{}
	}
	s.writeJSON(w, http.StatusOK, client.DomainsResponse{Domains: ds})
	return nil
}

// ---- Locks ----

// maxLockTTL bounds a lock's ttl: a holder that vanishes blocks others at most this long.
const maxLockTTL = 10 * time.Minute

func (s *Server) acquireLock(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	name := r.PathValue("name")
	if err := models.ValidateDomainName("name", name); err != nil {
		return err
	}
	var req client.LockRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Owner == "" {
		return &models.FieldError{Field: "owner", Reason: "must not be empty"}
	}
	ttl := time.Duration(req.TTLMs) * time.Millisecond
	if ttl < time.Second || ttl > maxLockTTL {
		return &models.FieldError{Field: "ttl_ms", Reason: "must be between 1000 and " + strconv.FormatInt(maxLockTTL.Milliseconds(), 10)}
	}
	if err := s.store.AcquireLock(r.Context(), name, req.Owner, ttl); err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, client.LockResponse{Name: name, Owner: req.Owner})
	return nil
}

func (s *Server) releaseLock(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	owner := r.URL.Query().Get("owner")
	if owner == "" {
		return reqErr(ErrInvalidRequest, "query parameter owner is required")
	}
	if err := s.store.ReleaseLock(r.Context(), r.PathValue("name"), owner); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) lockOwner(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	name := r.PathValue("name")
	owner, err := s.store.LockOwner(r.Context(), name)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, client.LockResponse{Name: name, Owner: owner})
	return nil
}

// drainCell asks a present cell to drain (operator): its presence is marked draining, so the
// auctioneer skips it, and its agent evacuates on seeing the change. Answers the presence.
func (s *Server) drainCell(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	d, ok := s.store.(store.CellDrainer)
	if !ok {
		return reqErr(models.ErrNotFound, "this BBS's store cannot drain cells")
	}
	c, err := d.DrainCell(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, c)
	return nil
}
