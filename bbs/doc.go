// Package bbs is the BBS: the system's API and single source of truth, storing records in etcd
// and enforcing the ActualLRP and Task state machines with etcd transactions.
package bbs
