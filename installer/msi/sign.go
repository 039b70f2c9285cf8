package msi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrSign wraps a failure of osslsigncode to sign or verify.
var ErrSign = errors.New("authenticode signing failed")

// SignConfig is an Authenticode signing identity for osslsigncode. Either CertFile and
// KeyFile (PEM) or PKCS12File is required.
type SignConfig struct {
	// CertFile is the code-signing certificate, with its intermediates, in PEM.
	CertFile string
	// KeyFile is its private key in PEM.
	KeyFile string
	// PKCS12File is a .pfx holding both, instead of CertFile and KeyFile.
	PKCS12File string
	// Password unlocks KeyFile or PKCS12File; empty for none.
	Password string
	// Description is the program name shown in the signature. Default "trellis".
	Description string
	// URL is the program's web page in the signature.
	URL string
	// TimestampURL, when set, has an RFC 3161 server countersign, so the signature outlives
	// the certificate.
	TimestampURL string
	// Osslsigncode is the binary. Default "osslsigncode".
	Osslsigncode string
}

// Enabled reports whether an identity is configured; signing is optional.
func (c SignConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" || c.PKCS12File != "" }

// Validate reports the first unusable field. Errors: ErrInvalidConfig.
func (c SignConfig) Validate() error {
	switch {
	case c.PKCS12File != "" && (c.CertFile != "" || c.KeyFile != ""):
		return fmt.Errorf("%w: sign: give pkcs12_file or cert_file and key_file, not both", ErrInvalidConfig)
	case c.PKCS12File == "" && (c.CertFile == "" || c.KeyFile == ""):
		return fmt.Errorf("%w: sign: cert_file and key_file must both be set", ErrInvalidConfig)
	}
	for _, f := range []string{c.CertFile, c.KeyFile, c.PKCS12File} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w: sign: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

func (c SignConfig) tool() (string, error) {
	name := c.Osslsigncode
	if name == "" {
		name = "osslsigncode"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s (Debian package osslsigncode): %v", ErrToolMissing, name, err)
	}
	return p, nil
}

// Sign signs the PE (.exe) or MSI file at path in place with an Authenticode signature.
// Errors: ErrInvalidConfig, ErrToolMissing, ErrSign.
func Sign(ctx context.Context, c SignConfig, path string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	tool, err := c.tool()
	if err != nil {
		return err
	}
	desc := c.Description
	if desc == "" {
		desc = "trellis"
	}
	args := []string{"sign", "-h", "sha256", "-n", desc}
	if c.PKCS12File != "" {
		args = append(args, "-pkcs12", c.PKCS12File)
	} else {
		args = append(args, "-certs", c.CertFile, "-key", c.KeyFile)
	}
	if c.Password != "" {
		// osslsigncode reads the password from a file rather than the command line, where
		// other users could see it.
		pw, err := os.CreateTemp("", "trellis-sign-pass-")
		if err != nil {
			return fmt.Errorf("msi: sign: %w", err)
		}
		defer os.Remove(pw.Name())
		_, werr := pw.WriteString(c.Password)
		if cerr := pw.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("msi: sign: %w", werr)
		}
		args = append(args, "-readpass", pw.Name())
	}
	if c.URL != "" {
		args = append(args, "-i", c.URL)
	}
	if c.TimestampURL != "" {
		args = append(args, "-ts", c.TimestampURL)
	}
	out := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".signed")
	defer os.Remove(out)
	args = append(args, "-in", path, "-out", out)
	if err := runTool(ctx, tool, args...); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSign, filepath.Base(path), err)
	}
	if err := os.Rename(out, path); err != nil {
		return fmt.Errorf("msi: sign: %w", err)
	}
	return nil
}

// Verify checks the Authenticode signature of path against the CA certificates in caFile.
// Errors: ErrToolMissing, ErrSign (unsigned, tampered with, or not issued by the CA).
func Verify(ctx context.Context, c SignConfig, caFile, path string) error {
	tool, err := c.tool()
	if err != nil {
		return err
	}
	if err := runTool(ctx, tool, "verify", "-CAfile", caFile, "-in", path); err != nil {
		return fmt.Errorf("%w: verify %s: %v", ErrSign, filepath.Base(path), err)
	}
	return nil
}

func runTool(ctx context.Context, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, lastLines(out.String(), 6))
	}
	return nil
}

// lastLines keeps the end of a tool's output, where the reason for a failure is.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
