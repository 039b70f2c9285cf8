package certs

import (
	"errors"
	"fmt"
	"strings"
)

// Roles a client certificate can carry in its Subject CommonName.
const (
	// RoleOperator may do everything, including creating and deleting desired work.
	RoleOperator = "operator"
	// RoleBrain is the auctioneer and converger: placement, restarts, retirements, locks.
	RoleBrain = "brain"
	// RoleCell is a cell agent; it may act only on its own cell's records.
	RoleCell = "cell"
)

// ErrInvalidIdentity is returned for a CommonName or identity string that names no role.
var ErrInvalidIdentity = errors.New("invalid identity")

// maxCellIDLength bounds a cell id; it becomes part of file names and etcd keys.
const maxCellIDLength = 128

// Identity is who a caller is: a role and, for a cell, its id.
type Identity struct {
	Role   string `json:"role"`
	CellID string `json:"cell_id,omitempty"`
}

// String returns the CommonName form: "operator", "brain" or "cell:<id>".
func (id Identity) String() string {
	if id.Role == RoleCell {
		return RoleCell + ":" + id.CellID
	}
	return id.Role
}

// ParseIdentity parses the CommonName form of an identity. Errors: ErrInvalidIdentity.
func ParseIdentity(s string) (Identity, error) {
	switch {
	case s == RoleOperator:
		return Identity{Role: RoleOperator}, nil
	case s == RoleBrain:
		return Identity{Role: RoleBrain}, nil
	case strings.HasPrefix(s, RoleCell+":"):
		id := Identity{Role: RoleCell, CellID: strings.TrimPrefix(s, RoleCell+":")}
		if err := ValidateCellID(id.CellID); err != nil {
			return Identity{}, err
		}
		return id, nil
	}
	return Identity{}, fmt.Errorf("%w: %q is not \"operator\", \"brain\" or \"cell:<id>\"", ErrInvalidIdentity, s)
}

// ValidateCellID checks that a cell id is 1–128 characters of [A-Za-z0-9_.-], so that it is safe
// in a CommonName, a file name and an etcd key. Errors: ErrInvalidIdentity.
func ValidateCellID(cellID string) error {
	if cellID == "" {
		return fmt.Errorf("%w: empty cell id", ErrInvalidIdentity)
	}
	if len(cellID) > maxCellIDLength {
		return fmt.Errorf("%w: cell id longer than %d characters", ErrInvalidIdentity, maxCellIDLength)
	}
	for _, c := range cellID {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("%w: cell id %q may hold only letters, digits, '_', '-' and '.'", ErrInvalidIdentity, cellID)
		}
	}
	if cellID == "." || cellID == ".." {
		return fmt.Errorf("%w: cell id %q", ErrInvalidIdentity, cellID)
	}
	return nil
}
