package etcd

import "errors"

// ErrInvalidConfig is returned, wrapped, when a Config or ClientConfig fails validation.
var ErrInvalidConfig = errors.New("invalid etcd configuration")

// ErrNotReady is returned, wrapped, when the embedded member does not become ready in time.
var ErrNotReady = errors.New("embedded etcd not ready")
