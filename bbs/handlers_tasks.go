package bbs

import (
	"net/http"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func (s *Server) desireTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var task models.Task
	if err := s.decode(w, r, &task, false); err != nil {
		return err
	}
	if err := task.Validate(); err != nil {
		return err
	}
	created, err := s.store.DesireTask(r.Context(), &task)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tasks/"+created.TaskGuid)
	s.writeJSON(w, http.StatusCreated, created)
	return nil
}

func (s *Server) tasks(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	q := r.URL.Query()
	tasks, rev, err := s.store.Tasks(r.Context(), store.TaskFilter{Domain: q.Get("domain"), CellID: q.Get("cell_id")})
	if err != nil {
		return err
	}
	if tasks == nil {
		tasks = []*models.Task{}
	}
	s.writeJSON(w, http.StatusOK, client.TasksResponse{Tasks: tasks, Revision: rev})
	return nil
}

func (s *Server) task(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	return s.taskForCaller(w, id)(s.store.Task(r.Context(), r.PathValue("guid")))
}

// deleteTask deletes a RESOLVING task. With ?force=true (the brain's purge of old COMPLETED
// tasks) a COMPLETED task goes too; the brain may delete only that way.
func (s *Server) deleteTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	force, err := queryBool(r, "force")
	if err != nil {
		return err
	}
	if err := s.store.DeleteTask(r.Context(), r.PathValue("guid"), force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	if err := s.decode(w, r, &client.EmptyRequest{}, true); err != nil {
		return err
	}
	return s.answerTask(w)(s.store.CancelTask(r.Context(), r.PathValue("guid")))
}

func (s *Server) resolvingTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	if err := s.decode(w, r, &client.EmptyRequest{}, true); err != nil {
		return err
	}
	return s.answerTask(w)(s.store.ResolvingTask(r.Context(), r.PathValue("guid")))
}

func (s *Server) placeTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var req client.PlaceRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if err := models.ValidateCellID("cell_id", req.CellID); err != nil {
		return err
	}
	return s.answerTask(w)(s.store.PlaceTask(r.Context(), r.PathValue("guid"), req.CellID, req.Revision))
}

func (s *Server) failTaskPlacement(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var req client.ReasonRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Reason == "" {
		return &models.FieldError{Field: "reason", Reason: "must not be empty"}
	}
	return s.answerTask(w)(s.store.FailTaskPlacement(r.Context(), r.PathValue("guid"), req.Reason, req.Revision))
}

func (s *Server) failTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	var req client.ReasonRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Reason == "" {
		return &models.FieldError{Field: "reason", Reason: "must not be empty"}
	}
	if req.Revision != 0 {
		return &models.FieldError{Field: "revision", Reason: "is not supported when failing a task"}
	}
	return s.answerTask(w)(s.store.FailTask(r.Context(), r.PathValue("guid"), req.Reason))
}

func (s *Server) unresolveTask(w http.ResponseWriter, r *http.Request, _ certs.Identity) error {
	if err := s.decode(w, r, &client.EmptyRequest{}, true); err != nil {
		return err
	}
	return s.answerTask(w)(s.store.UnresolveTask(r.Context(), r.PathValue("guid")))
}

func (s *Server) startTask(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	var req client.CellRequest
	if err := s.decode(w, r, &req, true); err != nil {
		return err
	}
	if err := actAsCell(id, &req.CellID); err != nil {
		return err
	}
	should, err := s.store.StartTask(r.Context(), r.PathValue("guid"), req.CellID)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, client.StartTaskResponse{ShouldStart: should})
	return nil
}

func (s *Server) rejectTask(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
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
	return s.answerTask(w)(s.store.RejectTask(r.Context(), r.PathValue("guid"), req.CellID, req.Reason))
}

func (s *Server) completeTask(w http.ResponseWriter, r *http.Request, id certs.Identity) error {
	var req client.CompleteTaskRequest
	if err := s.decode(w, r, &req, false); err != nil {
		return err
	}
	if err := actAsCell(id, &req.CellID); err != nil {
		return err
	}
	if req.Failed && req.FailureReason == "" {
		return &models.FieldError{Field: "failure_reason", Reason: "must not be empty when failed is true"}
	}
	return s.answerTask(w)(s.store.CompleteTask(r.Context(), r.PathValue("guid"), req.CellID, req.Failed, req.FailureReason, req.Result))
}

// answerTask returns a function answering 200 with the task, or the store's error.
func (s *Server) answerTask(w http.ResponseWriter) func(*models.Task, error) error {
	return func(t *models.Task, err error) error {
		if err != nil {
			return err
		}
		s.writeJSON(w, http.StatusOK, t)
		return nil
	}
}
