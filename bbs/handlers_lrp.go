package bbs

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// ---- Desired LRPs ----

func (s *Server) desireLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var lrp models.DesiredLRP
	if err := s.decode(w, r, &lrp, false); err != nil {
		return err
	}
	if err := lrp.Validate(); err != nil {
		return err
	}
	if err := s.resolveImage(r.Context(), &lrp); err != nil {
		return err
	}
	created, err := s.store.DesireLRP(r.Context(), &lrp)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/desired_lrps/"+created.ProcessGuid)
	s.writeJSON(w, http.StatusCreated, created)
	return nil
}

func (s *Server) desiredLRPs(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	q := r.URL.Query()
	filter := store.DesiredLRPFilter{Domain: q.Get("domain")}
	if v := q.Get("process_guid"); v != "" {
		for _, g := range strings.Split(v, ",") {
			if g = strings.TrimSpace(g); g != "" {
				filter.ProcessGuids = append(filter.ProcessGuids, g)
			}
		}
	}
	lrps, rev, err := s.store.DesiredLRPs(r.Context(), filter)
	if err != nil {
		return err
	}
	if lrps == nil {
		lrps = []*models.DesiredLRP{}
	}
	s.writeJSON(w, http.StatusOK, client.DesiredLRPsResponse{DesiredLRPs: lrps, Revision: rev})
	return nil
}

func (s *Server) desiredLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	lrp, err := s.store.DesiredLRP(r.Context(), r.PathValue("guid"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(lrp.Revision, 10)))
	return s.desiredLRPForCaller(w, r, id, lrp)
}

func (s *Server) updateDesiredLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	expect, err := ifMatch(r)
	if err != nil {
		return err
	}
	var update models.DesiredLRPUpdate
	if err := s.decode(w, r, &update, false); err != nil {
		return err
	}
	if err := update.Validate(); err != nil {
		return err
	}
	lrp, err := s.store.UpdateDesiredLRP(r.Context(), r.PathValue("guid"), update, expect)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(lrp.Revision, 10)))
	s.writeJSON(w, http.StatusOK, lrp)
	return nil
}

// ifMatch parses the optional If-Match header: a revision, bare or quoted as the ETag gives it.
// Errors: InvalidRequest.
func ifMatch(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return 0, nil
	}
	v := strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	rev, err := strconv.ParseInt(v, 10, 64)
	if err != nil || rev <= 0 {
		return 0, reqErr(ErrInvalidRequest, "If-Match %q is not a revision", h)
	}
	return rev, nil
}

func (s *Server) removeDesiredLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	if err := s.store.RemoveDesiredLRP(r.Context(), r.PathValue("guid")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- Actual LRPs: reads and the operator's restart ----

func (s *Server) actualLRPs(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	q := r.URL.Query()
	filter := store.ActualLRPFilter{ProcessGuid: q.Get("process_guid"), CellID: q.Get("cell_id"), Domain: q.Get("domain")}
	if v := q.Get("index"); v != "" {
		i, err := strconv.ParseInt(v, 10, 32)
		if err != nil || i < 0 {
			return reqErr(ErrInvalidRequest, "query parameter index=%q is not a non-negative integer", v)
		}
		idx := int32(i)
		filter.Index = &idx
	}
	lrps, rev, err := s.store.ActualLRPs(r.Context(), filter)
	if err != nil {
		return err
	}
	if lrps == nil {
		lrps = []*models.ActualLRP{}
	}
	s.writeJSON(w, http.StatusOK, client.ActualLRPsResponse{ActualLRPs: lrps, Revision: rev})
	return nil
}

// actualLRPGroup answers every presence of one instance; 404 when there is none.
func (s *Server) actualLRPGroup(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	lrps, rev, err := s.store.ActualLRPs(r.Context(), store.ActualLRPFilter{ProcessGuid: key.ProcessGuid, Index: &key.Index})
	if err != nil {
		return err
	}
	if len(lrps) == 0 {
		return reqErr(models.ErrNotFound, "actual_lrp %s/%d", key.ProcessGuid, key.Index)
	}
	s.writeJSON(w, http.StatusOK, client.ActualLRPsResponse{ActualLRPs: lrps, Revision: rev})
	return nil
}

// restartActualLRPInstance is the operator's restart of one instance: the ORDINARY record is
// retired (its cell stops the container) and an UNCLAIMED one is created in its place, to be
// auctioned again. The two steps are separate transactions; should the second fail, the
// converger creates the missing index on its next pass.
func (s *Server) restartActualLRPInstance(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	if err := s.store.RetireActualLRP(r.Context(), key, models.PresenceOrdinary, 0); err != nil {
		return err
	}
	lrp, err := s.store.CreateUnclaimedActualLRP(r.Context(), key)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, lrp)
	return nil
}

// actualKey parses {guid}/{index}. The domain is left empty: the store knows it.
func actualKey(r *http.Request) (models.ActualLRPKey, error) {
	idx, err := pathIndex(r)
	if err != nil {
		return models.ActualLRPKey{}, err
	}
	return models.ActualLRPKey{ProcessGuid: r.PathValue("guid"), Index: idx}, nil
}

// ---- Actual LRPs: brain ----

func (s *Server) createUnclaimedActualLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.EmptyRequest
	if err := s.decode(w, r, &req, true); err != nil {
		return err
	}
	lrp, err := s.store.CreateUnclaimedActualLRP(r.Context(), key)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusCreated, lrp)
	return nil
}

func (s *Server) placeActualLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.PlaceRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if err := models.ValidateCellID("cell_id", req.CellID); err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.PlaceActualLRP(r.Context(), key, req.CellID, req.Revision))
}

func (s *Server) failActualLRPPlacement(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.ReasonRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Reason == "" {
		return &models.FieldError{Field: "reason", Reason: "must not be empty"}
	}
	return s.answerLRP(w)(s.store.FailActualLRPPlacement(r.Context(), key, req.Reason, req.Revision))
}

func (s *Server) restartActualLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.RevisionRequest
	if err := s.decode(w, r, &req, true); err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.RestartActualLRP(r.Context(), key, req.Revision))
}

func (s *Server) retireActualLRP(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.RetireRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if err := checkPresence(req.Presence); err != nil {
		return err
	}
	if err := s.store.RetireActualLRP(r.Context(), key, req.Presence, req.Revision); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) markActualLRPSuspect(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.RevisionRequest
	if err := s.decode(w, r, &req, true); err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.MarkActualLRPSuspect(r.Context(), key, req.Revision))
}

// applyActualLRPOps answers many brain writes in one request, one result per operation: an
// operation refused does not fail the others, so the answer is 200 whenever the request itself
// is well formed.
func (s *Server) applyActualLRPOps(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var req client.ActualLRPBatchRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Ops) > store.MaxActualLRPOps {
		return reqErr(ErrInvalidRequest, "%d operations are over the limit of %d per request", len(req.Ops), store.MaxActualLRPOps)
	}
	results := make([]client.ActualLRPBatchResult, len(req.Ops))
	ops := make([]store.ActualLRPOp, 0, len(req.Ops))
	pos := make([]int, 0, len(req.Ops)) // index in req.Ops of each op passed to the store
	for i, op := range req.Ops {
		if op.Action == store.ActionPlace {
			if err := models.ValidateCellID("cell_id", op.CellID); err != nil {
				results[i] = s.batchError(r, err)
				continue
			}
		}
		ops = append(ops, op)
		pos = append(pos, i)
	}
	out, err := s.store.ApplyActualLRPOps(r.Context(), ops)
	if err != nil {
		return err
	}
	for j, res := range out {
		if res.Err != nil {
			results[pos[j]] = s.batchError(r, res.Err)
			continue
		}
		results[pos[j]] = client.ActualLRPBatchResult{ActualLRP: res.ActualLRP, Status: http.StatusOK}
	}
	s.writeJSON(w, http.StatusOK, client.ActualLRPBatchResponse{Results: results})
	return nil
}

// batchError is the result of one refused operation of a batch, as writeError would answer it
// for the single call.
func (s *Server) batchError(r *http.Request, err error) client.ActualLRPBatchResult {
	status, typ := classify(err)
	msg := err.Error()
	if status >= 500 {
		s.logger.Warn("batch operation failed", "path", r.URL.Path, "status", status, "error", err)
		if status == http.StatusInternalServerError {
			msg = "internal error"
		}
	}
	s.metrics.storeErrors.WithLabelValues(typ).Inc()
	return client.ActualLRPBatchResult{Status: status, Error: &client.ErrorBody{Type: typ, Message: msg}}
}

// ---- Actual LRPs: cell ----

func (s *Server) claimActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.InstanceRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	ik, err := instanceKey(id, req.InstanceGuid, req.CellID)
	if err != nil {
		return err
	}
	if !req.WithDesired {
		return s.answerLRP(w)(s.store.ClaimActualLRP(r.Context(), key, ik))
	}
	rec, d, err := s.store.ClaimActualLRPWithDesired(r.Context(), key, ik)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, client.ClaimActualLRPResponse{ActualLRP: rec, DesiredLRP: d})
	return nil
}

func (s *Server) startActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.StartActualLRPRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	ik, err := instanceKey(id, req.InstanceGuid, req.CellID)
	if err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.StartActualLRP(r.Context(), key, ik, req.NetInfo))
}

func (s *Server) crashActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.CrashActualLRPRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	ik, err := instanceKey(id, req.InstanceGuid, req.CellID)
	if err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.CrashActualLRP(r.Context(), key, ik, req.Reason))
}

func (s *Server) rejectActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.RejectRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if err := actAsCell(id, &req.CellID); err != nil {
		return err
	}
	if req.Reason == "" {
		return &models.FieldError{Field: "reason", Reason: "must not be empty"}
	}
	return s.answerLRP(w)(s.store.RejectActualLRP(r.Context(), key, req.CellID, req.Reason))
}

func (s *Server) removeActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.RemoveActualLRPRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	ik, err := instanceKey(id, req.InstanceGuid, req.CellID)
	if err != nil {
		return err
	}
	if err := checkPresence(req.Presence); err != nil {
		return err
	}
	if err := s.store.RemoveActualLRP(r.Context(), key, req.Presence, ik); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) evacuateActualLRP(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	key, err := actualKey(r)
	if err != nil {
		return err
	}
	var req client.InstanceRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	ik, err := instanceKey(id, req.InstanceGuid, req.CellID)
	if err != nil {
		return err
	}
	return s.answerLRP(w)(s.store.EvacuateActualLRP(r.Context(), key, ik))
}

// instanceKey builds the acting container's key, holding a cell to its own cell id.
// Errors: Forbidden, InvalidRecord.
func instanceKey(id certs.Identity, instanceGuid, cellID string) (models.ActualLRPInstanceKey, error) {
	if err := actAsCell(id, &cellID); err != nil {
		return models.ActualLRPInstanceKey{}, err
	}
	ik := models.ActualLRPInstanceKey{InstanceGuid: instanceGuid, CellID: cellID}
	return ik, ik.Validate()
}

func checkPresence(p string) error {
	switch p {
	case models.PresenceOrdinary, models.PresenceEvacuating, models.PresenceSuspect:
		return nil
	}
	return &models.FieldError{Field: "presence", Reason: "must be ORDINARY, EVACUATING or SUSPECT"}
}

// answerLRP returns a function answering 200 with the record, or the store's error.
func (s *Server) answerLRP(w http.ResponseWriter) func(*models.ActualLRP, error) error {
	return func(lrp *models.ActualLRP, err error) error {
		if err != nil {
			return err
		}
		s.writeJSON(w, http.StatusOK, lrp)
		return nil
	}
}
