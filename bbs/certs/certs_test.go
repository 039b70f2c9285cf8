package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in      string
		want    Identity
		wantErr bool
	}{
		{in: "operator", want: Identity{Role: RoleOperator}},
		{in: "brain", want: Identity{Role: RoleBrain}},
		{in: "cell:z1-cell.07", want: Identity{Role: RoleCell, CellID: "z1-cell.07"}},
		{in: "cell:", wantErr: true},
		{in: "cell:a b", wantErr: true},
		{in: "cell:../x", wantErr: true},
		{in: "cell:..", wantErr: true},
		{in: "Operator", wantErr: true},
		{in: "", wantErr: true},
		{in: "admin", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIdentity(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidIdentity) {
					t.Fatalf("ParseIdentity(%q) = %+v, %v; want ErrInvalidIdentity", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseIdentity(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func readAll(t *testing.T, paths ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestEnsureDevPKIIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	p1, err := EnsureDevPKI(dir, []string{"bbs.example"})
	if err != nil {
		t.Fatal(err)
	}
	files := []string{p1.CAFile, p1.Server.CertFile, p1.Server.KeyFile, p1.Operator.CertFile, p1.Brain.KeyFile}
	before := readAll(t, files...)
	for _, key := range []string{filepath.Join(dir, CAKeyFile), p1.Server.KeyFile, p1.Operator.KeyFile, p1.Brain.KeyFile} {
		st, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", key, st.Mode().Perm())
		}
	}

	p2, err := EnsureDevPKI(dir, []string{"bbs.example"})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range readAll(t, files...) {
		if !bytes.Equal(b, before[i]) {
			t.Errorf("%s was rewritten by a second EnsureDevPKI", files[i])
		}
	}

	// A new name reissues the server certificate, under the same CA.
	if _, err := EnsureDevPKI(dir, []string{"bbs.example", "10.1.2.3"}); err != nil {
		t.Fatal(err)
	}
	after := readAll(t, p2.CAFile, p2.Server.CertFile)
	if !bytes.Equal(after[0], before[0]) {
		t.Error("the CA was replaced")
	}
	if bytes.Equal(after[1], before[1]) {
		t.Fatal("the server certificate was not reissued for a new name")
	}
	kp, err := LoadKeyPair(p2.Server.CertFile, p2.Server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "bbs.example"} {
		if err := kp.Cert.VerifyHostname(name); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.1.2.3"} {
		if err := kp.Cert.VerifyHostname(ip); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
}

func TestEnsureDevPKIReplacesCorruptLeaf(t *testing.T) {
	dir := t.TempDir()
	p, err := EnsureDevPKI(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Operator.CertFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureDevPKI(dir, nil); err != nil {
		t.Fatal(err)
	}
	kp, err := LoadKeyPair(p.Operator.CertFile, p.Operator.KeyFile)
	if err != nil {
		t.Fatalf("operator certificate not repaired: %v", err)
	}
	if kp.Cert.Subject.CommonName != "operator" {
		t.Fatalf("CommonName = %q", kp.Cert.Subject.CommonName)
	}
}

func TestIssueCell(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := p.IssueCell("cell-7")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(f.CertFile) != "cell-cell-7.crt" {
		t.Errorf("cert file = %s", f.CertFile)
	}
	kp, err := LoadKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Cert.Subject.CommonName != "cell:cell-7" {
		t.Errorf("CommonName = %q", kp.Cert.Subject.CommonName)
	}
	pool, err := LoadCertPool(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("cell certificate does not verify as a client certificate: %v", err)
	}
	if _, err := p.IssueCell("bad/id"); !errors.Is(err, ErrInvalidIdentity) {
		t.Fatalf("IssueCell(bad/id) = %v, want ErrInvalidIdentity", err)
	}
}

func TestLoadKeyPairRejectsMismatchedKey(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyPair(p.Operator.CertFile, p.Brain.KeyFile); !errors.Is(err, ErrInvalidPEM) {
		t.Fatalf("LoadKeyPair with the wrong key = %v, want ErrInvalidPEM", err)
	}
}

// TestMutualTLS proves the two TLS configurations together: the server learns the client's
// CommonName, and a client certificate from another CA fails the handshake.
func TestMutualTLS(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerTLSConfig(p.CAFile, p.Server.CertFile, p.Server.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		certs    Files
		wantCN   string
		wantFail bool
	}{
		{name: "operator", certs: p.Operator, wantCN: "operator"},
		{name: "no client certificate", wantCN: ""},
		{name: "other CA", certs: other.Operator, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- "accept: " + err.Error()
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					got <- "handshake failed"
					return
				}
				cn := ""
				if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
					cn = pcs[0].Subject.CommonName
				}
				got <- cn
			}()
			cliCfg, err := ClientTLSConfig(p.CAFile, tt.certs.CertFile, tt.certs.KeyFile)
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			c, err := tls.Dial("tcp", net.JoinHostPort("localhost", port), cliCfg)
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			res := <-got
			if tt.wantFail {
				if res != "handshake failed" {
					t.Fatalf("server accepted a certificate from another CA (peer %q)", res)
				}
				return
			}
			if res != tt.wantCN {
				t.Fatalf("server saw %q, want %q (client error %v)", res, tt.wantCN, err)
			}
		})
	}
}

func TestIssueAgentServer(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := p.IssueAgentServer("cell-7", []string{"cell7.example", "10.0.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(f.CertFile) != "cell-cell-7-api.crt" {
		t.Errorf("cert file = %s", f.CertFile)
	}
	kp, err := LoadKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cell7.example", "10.0.0.7", "127.0.0.1", "localhost"} {
		if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("agent certificate does not verify as server %s: %v", name, err)
		}
	}
	again, err := p.IssueAgentServer("cell-7", []string{"cell7.example"})
	if err != nil || again != f {
		t.Fatalf("second IssueAgentServer = %+v, %v", again, err)
	}
	if _, err := p.IssueAgentServer("bad/id", nil); !errors.Is(err, ErrInvalidIdentity) {
		t.Fatalf("IssueAgentServer(bad/id) = %v, want ErrInvalidIdentity", err)
	}
}
