package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside a dev PKI directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// renewBefore is how close to expiry EnsureDevPKI replaces a leaf certificate.
const renewBefore = 30 * 24 * time.Hour

// Files names a certificate and its key on disk.
type Files struct {
	CertFile string
	KeyFile  string
}

// DevPKI is the certificate set of a one-machine cluster, kept in Dir.
type DevPKI struct {
	Dir    string
	CAFile string
	CA     *CA
	// Server is the BBS certificate (localhost, 127.0.0.1, ::1 and the requested names).
	Server Files
	// Operator and Brain are client certificates for those roles.
	Operator Files
	Brain    Files
}

// EnsureDevPKI makes sure dir holds a CA, a server certificate covering serverNames (plus
// localhost, 127.0.0.1 and ::1), and operator and brain client certificates. Files that exist,
// are signed by the CA, cover what is asked and are not close to expiry are reused, so calling it
// on every start is cheap and keeps the certificates that clients already hold. A server
// certificate missing a requested name is reissued. The CA itself is never replaced: delete dir
// to start over.
func EnsureDevPKI(dir string, serverNames []string) (*DevPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: create %s: %w", dir, err)
	}
	p := &DevPKI{
		Dir:      dir,
		CAFile:   filepath.Join(dir, CACertFile),
		Server:   Files{filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)},
		Operator: clientFiles(dir, RoleOperator),
		Brain:    clientFiles(dir, RoleBrain),
	}
	ca, err := LoadCA(p.CAFile, filepath.Join(dir, CAKeyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ca, err = NewCA("trellis dev CA"); err != nil {
			return nil, err
		}
		if err := ca.WriteFiles(p.CAFile, filepath.Join(dir, CAKeyFile)); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("certs: dev CA in %s: %w", dir, err)
	}
	p.CA = ca

	if err := p.ensure(p.Server, func(c *x509.Certificate) bool { return coversNames(c, serverNames) },
		func() (*KeyPair, error) { return ca.IssueServer(serverNames) }); err != nil {
		return nil, err
	}
	for _, id := range []Identity{{Role: RoleOperator}, {Role: RoleBrain}} {
		if _, err := p.ensureClient(id); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// IssueCell returns the certificate files of cell cellID, creating them on first use.
func (p *DevPKI) IssueCell(cellID string) (Files, error) {
	if err := ValidateCellID(cellID); err != nil {
		return Files{}, fmt.Errorf("certs: issue cell certificate: %w", err)
	}
	return p.ensureClient(Identity{Role: RoleCell, CellID: cellID})
}

// ClientFiles returns where the certificate of id lives in the directory (whether or not it
// exists yet).
func (p *DevPKI) ClientFiles(id Identity) Files { return clientFiles(p.Dir, id.String()) }

func (p *DevPKI) ensureClient(id Identity) (Files, error) {
	f := p.ClientFiles(id)
	err := p.ensure(f, func(c *x509.Certificate) bool { return c.Subject.CommonName == id.String() },
		func() (*KeyPair, error) { return p.CA.IssueClient(id) })
	return f, err
}

// ensure reuses the pair in f when it loads, chains to the CA, passes ok and is not near expiry;
// otherwise it issues a new one and writes it.
func (p *DevPKI) ensure(f Files, ok func(*x509.Certificate) bool, issue func() (*KeyPair, error)) error {
	kp, err := LoadKeyPair(f.CertFile, f.KeyFile)
	if err == nil && ok(kp.Cert) && kp.Cert.CheckSignatureFrom(p.CA.Cert) == nil &&
		time.Until(kp.Cert.NotAfter) > renewBefore {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrInvalidPEM) {
		return err
	}
	kp, err = issue()
	if err != nil {
		return err
	}
	return kp.WriteFiles(f.CertFile, f.KeyFile)
}

// clientFiles maps "cell:a" to cell-a.crt / cell-a.key (no ':' in file names, for Windows).
func clientFiles(dir, commonName string) Files {
	base := commonName
	if id, err := ParseIdentity(commonName); err == nil && id.Role == RoleCell {
		base = RoleCell + "-" + id.CellID
	}
	return Files{filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")}
}

func coversNames(c *x509.Certificate, names []string) bool {
	for _, n := range serverNames(names) {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	return true
}
