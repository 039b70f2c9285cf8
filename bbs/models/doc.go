// Package models holds the records the BBS stores and serves: DesiredLRP, ActualLRP, Task,
// CellPresence and Domain, with Diego's JSON field names, their validation (errors name the
// offending field) and the ActualLRP and Task state machines as pure functions.
//
// Nothing in this package talks to etcd or the network; the store (package bbs) enforces the
// state machines by calling the functions here inside an etcd transaction.
//
// # Reading and checking input
//
// The server reads a request body with DecodeStrict (unknown fields, trailing data and
// malformed JSON are refused) and then calls the record's Validate method. Every refusal is a
// *FieldError whose Field is the JSON path of the offending value, such as
// "action.serial.actions[1].run.path" or "env[2].name", and whose Reason says why; it wraps
// ErrInvalidRecord, which the API reports as error.type "InvalidRecord". Validation stops at
// the first offending field. The limits (MaxInstances, MaxRoutesBytes, MaxAnnotationBytes,
// MaxActionDepth, ...) are exported constants.
//
// # Rootfs
//
// A rootfs is a URI: "preloaded:<stack>", "docker:///<repo>[:tag|@digest]",
// "docker://<registry>/<repo>..." or the same under "oci". ParseRootFS checks one and returns
// its scheme and stack or image reference. A cell lists what it can run in rootfs_providers:
// "preloaded:<stack>" entries and bare schemes; RequiredRootFSProvider and RootFSProvidedBy are
// the auctioneer's matching rule.
//
// # State machines
//
// ValidateActualLRPTransition and ValidateActualLRPTransitionBy decide whether one ActualLRP
// record may become another (a refusal is a *TransitionError wrapping ErrInvalidTransition)
// and check the new record's invariants with (*ActualLRP).ValidateState (a refusal there is a
// *FieldError). ValidateTaskTransition and CanDeleteTask do the same for tasks.
//
// # Restart policy
//
// A zero RestartPolicy field means Diego's default (DefaultRestartPolicy); WithDefaults fills
// them in.
package models
