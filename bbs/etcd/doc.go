// Package etcd starts the single-node etcd member that the BBS embeds by default and dials
// external etcd clusters.
//
// StartEmbedded runs an etcd server inside the calling process: it listens for clients on a
// loopback address only (port 0 picks a free port; Endpoints reports the real one), opens no
// peer listener, keeps its data under Config.DataDir across restarts and compacts history
// automatically while keeping enough of it for event streams to resume. Close stops it and
// may be called more than once.
//
// NewClient dials an external cluster (three or five members at fleet scale), with TLS when
// ClientConfig names certificate files.
//
// Both return a *clientv3.Client for package bbs/store.
package etcd
