package certs

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
)

// IssueAgentServer returns the server certificate of cell cellID's agent API (for `trellis
// logs` and metrics), valid for localhost, 127.0.0.1, ::1 and names, creating it on first use
// and reissuing it when a name is missing. Its files are cell-<id>-api.crt / .key.
// Errors: ErrInvalidIdentity (cellID).
func (p *DevPKI) IssueAgentServer(cellID string, names []string) (Files, error) {
	if err := ValidateCellID(cellID); err != nil {
		return Files{}, fmt.Errorf("certs: issue agent server certificate: %w", err)
	}
	base := filepath.Join(p.Dir, RoleCell+"-"+cellID+"-api")
	f := Files{CertFile: base + ".crt", KeyFile: base + ".key"}
	err := p.ensure(f, func(c *x509.Certificate) bool { return coversNames(c, names) },
		func() (*KeyPair, error) { return p.CA.IssueServer(names) })
	return f, err
}
