package bbs

import (
	"net/http"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
)

// IdentityHeader carries the caller's identity in insecure mode ("operator", "brain" or
// "cell:<id>"; "operator" when absent). It is ignored over TLS.
const IdentityHeader = "X-Trellis-Identity"

// roles is the set of roles a route admits.
type roles uint8

const (
	allowOperator roles = 1 << iota
	allowBrain
	allowCell

	anyRole = allowOperator | allowBrain | allowCell
)

func (rs roles) admits(id certs.Identity) bool {
	switch id.Role {
	case certs.RoleOperator:
		return rs&allowOperator != 0
	case certs.RoleBrain:
		return rs&allowBrain != 0
	case certs.RoleCell:
		return rs&allowCell != 0
	}
	return false
}

// authenticate returns the caller's identity: the CommonName of the verified client certificate,
// or in insecure mode the IdentityHeader. Errors: Unauthenticated.
func (s *Server) authenticate(r *http.Request) (certs.Identity, error) {
	if s.cfg.Insecure {
		h := r.Header.Get(IdentityHeader)
		if h == "" {
			return certs.Identity{Role: certs.RoleOperator}, nil
		}
		id, err := certs.ParseIdentity(h)
		if err != nil {
			return certs.Identity{}, reqErr(models.ErrUnauthenticated, "%s header: %v", IdentityHeader, err)
		}
		return id, nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return certs.Identity{}, reqErr(models.ErrUnauthenticated, "a client certificate is required")
	}
	cn := r.TLS.PeerCertificates[0].Subject.CommonName
	id, err := certs.ParseIdentity(cn)
	if err != nil {
		return certs.Identity{}, reqErr(models.ErrUnauthenticated, "client certificate: %v", err)
	}
	return id, nil
}

// actAsCell checks that a cell caller names its own cell. cellID empty means "the caller's
// cell" and is filled in. Errors: Forbidden.
func actAsCell(id certs.Identity, cellID *string) error {
	if *cellID == "" {
		*cellID = id.CellID
	}
	if *cellID != id.CellID {
		return reqErr(models.ErrForbidden, "%s may act only for its own cell, not for cell %q", id, *cellID)
	}
	return nil
}
