// Package models holds the records the BBS stores and serves: DesiredLRP, ActualLRP, Task,
// CellPresence and Domain, with Diego's JSON field names, their validation (errors name the
// offending field) and the ActualLRP and Task state machines as pure functions.
//
// Nothing in this package talks to etcd or the network; the store (package bbs) enforces the
// state machines by calling the functions here inside an etcd transaction.
package models
