// Package store keeps the BBS records in etcd. Interface is the contract the BBS server
// programs against; *Store implements it over a *clientv3.Client (see package bbs/etcd for an
// embedded member or an external cluster):
//
//	e, err := etcd.StartEmbedded(ctx, cfg, logger)
//	s := store.New(e.Client(), store.Options{Logger: logger})
//
// Records are JSON under a versioned prefix (DefaultPrefix, "/trellis/v1/"):
//
//	desired/<process_guid>
//	actual/<process_guid>/<index, 10 digits>/<ORDINARY|EVACUATING|SUSPECT>
//	tasks/<task_guid>
//	cells/<cell_id>      under the cell's lease
//	domains/<name>       under a lease when it has a ttl
//	locks/<name>         under the holder's lease
//
// The Revision field of every returned record is its etcd mod revision; it is not stored.
//
// Every transition reads the record, checks it with the state machines of package models, and
// writes in one transaction compared on the record's mod revision (and on absence for a
// create). With expectRevision 0 a lost race re-reads and re-validates, up to
// Options.MaxRetries times; with a non-zero expectRevision it is models.ErrConflict. Changes
// of several records (suspect, evacuate, scale, remove) are one transaction; desiring or
// scaling up by more than 100 instances writes them in batches of 100 (etcd allows 128
// operations per transaction), and the converger creates any index a crash left missing.
//
// A Store holds no state besides its client, so any number of BBS replicas can share a
// cluster; heartbeats find the cell's lease on its key and renew it, and locks do the same.
// Watch turns an etcd watch into Events, resumable from any revision etcd still keeps. A Store
// shares one etcd watch among all its Watch calls (hub.go): each change is decoded once and
// handed to the subscribers whose filter matches (cell-filtered ones looked up by cell id), and
// the records it carries also serve a cell's ActualLRP listing and the read before each
// instance transition's compare-and-swap. Records in events are shared between subscribers
// and must not be modified. Options.DirectWatch turns this off (one etcd watch per call).
package store
