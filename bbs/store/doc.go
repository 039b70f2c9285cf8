// Package store keeps the BBS records in etcd: JSON under the versioned prefix /trellis/v1/,
// every state transition one transaction compared on the record's mod revision, cell presence
// under etcd leases, and a change stream built on etcd watches. Interface is the contract the
// BBS server programs against.
package store
