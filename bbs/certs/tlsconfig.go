package certs

import (
	"crypto/tls"
	"fmt"
)

// ServerTLSConfig builds the BBS server's TLS configuration: it presents certFile/keyFile and
// requests a client certificate, verifying any it is given against caFile. A client that
// presents none still completes the handshake so that unauthenticated routes (/healthz) work and
// others answer 401; a certificate from another CA fails the handshake.
func ServerTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: server key pair: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}, nil
}

// ClientTLSConfig builds a client's TLS configuration: it verifies the server against caFile
// and, when certFile and keyFile are set, presents that client certificate. Without them the
// client is unauthenticated and only reaches open routes.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("certs: client key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
