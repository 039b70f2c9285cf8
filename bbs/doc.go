// Package bbs is the BBS server: the system's HTTP/JSON API (versioned under /v1, documented in
// docs/api.md) over the store of package bbs/store, which keeps the records in etcd and enforces
// the ActualLRP and Task state machines with etcd transactions. The server is stateless, so
// several replicas may serve the same etcd.
//
// Callers authenticate with mutual TLS. The Subject CommonName of the client certificate is the
// caller's role (see bbs/certs): "operator" creates and deletes desired work, "brain" places,
// restarts and retires work and holds locks, "cell:<id>" heartbeats and moves its own instances
// and tasks through their states. Every authenticated role may read. In insecure mode (plain
// HTTP, allowed only on a loopback address) the identity comes from the X-Trellis-Identity header
// instead, so the same role checks apply.
//
// Usage:
//
//	cfg := bbs.DefaultConfig()
//	cfg.TLS = bbs.TLSConfig{CAFile: pki.CAFile, CertFile: pki.Server.CertFile, KeyFile: pki.Server.KeyFile}
//	srv, err := bbs.NewServer(cfg, st, logger)
//	...
//	err = srv.ListenAndServe(ctx) // returns after a graceful shutdown once ctx ends
//
// Errors are answered as {"error":{"type":"...","message":"..."}} with the type of
// models.ErrorType; package bbs/client maps them back so models.IsNotFound and friends work on
// the client side. Changes stream as server-sent events from GET /v1/events.
package bbs
