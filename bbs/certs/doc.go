// Package certs holds the TLS identities of a trellis cluster: a certificate authority (ECDSA
// P-256), the BBS server certificate, and client certificates whose Subject CommonName names the
// caller's role — "operator", "brain" or "cell:<id>" (see Identity).
//
// A one-machine cluster uses EnsureDevPKI, which creates the CA and the server, operator and
// brain certificates in a data directory the first time and reuses them afterwards; IssueCell
// adds a certificate for a local cell. ServerTLSConfig and ClientTLSConfig turn the PEM files into
// *tls.Config values for mutual TLS: the server requests and verifies client certificates
// against the CA, the client verifies the server against the same CA.
//
// Private keys are written with mode 0600, certificates with 0644.
package certs
