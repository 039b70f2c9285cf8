package bbs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// DefaultImageResolveTimeout bounds the registry round trip of one desire request.
const DefaultImageResolveTimeout = 15 * time.Second

// ImageResolver pins the tag of a docker:// or oci:// rootfs to the manifest digest it names
// now, so that every instance of a DesiredLRP, including those started after the tag moved,
// runs the same bytes. The BBS itself never imports a backend: the program that builds the
// server plugs one in (isolation_linux/image.Resolver is the registry-backed one).
type ImageResolver interface {
	// ResolveImage returns rootfs with "@sha256:…" appended; a rootfs that has a digest
	// already comes back unchanged. username and password authenticate to the registry; the
	// password must never appear in an error or a log line.
	// Errors: wrapping models.ErrInvalidRecord (a *models.FieldError naming the field) when
	// the image cannot be used as given — no such repository or tag, access refused, a
	// malformed reference — answered 422; anything else (the registry cannot be reached, a
	// timeout) is answered 503 Unavailable.
	ResolveImage(ctx context.Context, rootfs, username, password string) (string, error)
}

// ImageResolutionConfig says whether and how the BBS pins image tags at desire time.
type ImageResolutionConfig struct {
	// Skip stores docker:// and oci:// rootfs URIs as given, without asking a registry: for
	// BBSes that cannot reach the registries their cells pull from (air-gapped control
	// planes behind a cell-side mirror). Tags then resolve on each cell at each pull, so
	// instances started after a tag moved run the new image.
	Skip bool `json:"skip,omitempty"`
	// Timeout bounds one resolution; past it the request fails with 503. Default 15 s.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// resolveImage pins lrp.RootFS when it names an image by tag and resolution is on.
// Errors: a *models.FieldError (422) or models.ErrUnavailable (503), never quoting the password.
func (s *Server) resolveImage(ctx context.Context, lrp *models.DesiredLRP) error {
	if !models.IsImageRootFS(lrp.RootFS) || s.cfg.ImageResolution.Skip || s.cfg.ImageResolver == nil {
		return nil
	}
	timeout := s.cfg.ImageResolution.Timeout
	if timeout <= 0 {
		timeout = DefaultImageResolveTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	pinned, err := s.cfg.ImageResolver.ResolveImage(ctx, lrp.RootFS, lrp.ImageUsername, lrp.ImagePassword)
	if err != nil {
		msg := err.Error()
		if lrp.ImagePassword != "" {
			// Belt and braces: a resolver must scrub it, but a reply must never carry it.
			msg = strings.ReplaceAll(msg, lrp.ImagePassword, "<redacted>")
		}
		if errors.Is(err, models.ErrInvalidRecord) {
			var fe *models.FieldError
			if errors.As(err, &fe) && (lrp.ImagePassword == "" || !strings.Contains(fe.Reason, lrp.ImagePassword)) {
				return fe
			}
			return &models.FieldError{Field: "rootfs", Reason: msg}
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			msg = fmt.Sprintf("no answer from the registry within %v", timeout)
		}
		return fmt.Errorf("%w: rootfs: resolving %s to a digest: %s (retry, or set image_resolution.skip on an air-gapped BBS)",
			models.ErrUnavailable, lrp.RootFS, msg)
	}
	if _, _, err := models.ParseRootFS(pinned); err != nil {
		return fmt.Errorf("%w: rootfs: the image resolver returned %q: %v", models.ErrUnavailable, pinned, err)
	}
	if pinned != lrp.RootFS {
		s.logger.Info("pinned image", "process_guid", lrp.ProcessGuid, "rootfs", lrp.RootFS, "pinned", pinned,
			"took", time.Since(start).Round(time.Millisecond))
	}
	lrp.RootFS = pinned
	return nil
}

// redacted returns v with every image password removed, for writeJSON: the API never returns
// one, except to the cell the work is placed on (writeJSONWithSecrets).
func redacted(v any) any {
	switch x := v.(type) {
	case *models.DesiredLRP:
		return x.RedactSecrets()
	case *models.Task:
		return x.RedactSecrets()
	case client.DesiredLRPsResponse:
		out := x
		out.DesiredLRPs = make([]*models.DesiredLRP, len(x.DesiredLRPs))
		for i, d := range x.DesiredLRPs {
			out.DesiredLRPs[i] = d.RedactSecrets()
		}
		return out
	case client.TasksResponse:
		out := x
		out.Tasks = make([]*models.Task, len(x.Tasks))
		for i, t := range x.Tasks {
			out.Tasks[i] = t.RedactSecrets()
		}
		return out
	case store.Event:
		x.DesiredLRP = x.DesiredLRP.RedactSecrets()
		x.PreviousDesiredLRP = x.PreviousDesiredLRP.RedactSecrets()
		x.Task = x.Task.RedactSecrets()
		x.PreviousTask = x.PreviousTask.RedactSecrets()
		return x
	}
	return v
}

// desiredLRPForCaller answers GET /v1/desired_lrps/{guid}: the image password goes only to a
// cell that has an instance of the LRP placed on it or running there (it pulls the image);
// everyone else gets the redacted record.
func (s *Server) desiredLRPForCaller(w http.ResponseWriter, r *http.Request, id certs.Identity, lrp *models.DesiredLRP) error {
	if lrp.ImagePassword == "" || id.Role != certs.RoleCell {
		s.writeJSON(w, http.StatusOK, lrp)
		return nil
	}
	actual, _, err := s.store.ActualLRPs(r.Context(), store.ActualLRPFilter{ProcessGuid: lrp.ProcessGuid, CellID: id.CellID})
	if err != nil {
		return err
	}
	if len(actual) == 0 {
		s.writeJSON(w, http.StatusOK, lrp)
		return nil
	}
	s.writeJSONWithSecrets(w, http.StatusOK, lrp)
	return nil
}

// taskForCaller answers GET /v1/tasks/{guid}: the image password goes only to the cell the
// task is placed on.
func (s *Server) taskForCaller(w http.ResponseWriter, id certs.Identity) func(*models.Task, error) error {
	return func(t *models.Task, err error) error {
		if err != nil {
			return err
		}
		if id.Role == certs.RoleCell && t.CellID != "" && t.CellID == id.CellID {
			s.writeJSONWithSecrets(w, http.StatusOK, t)
			return nil
		}
		s.writeJSON(w, http.StatusOK, t)
		return nil
	}
}
