package isolationlinux

import "github.com/trellis-run/trellis/isolation_linux/containerinit"

// ErrInit: a container's init failed or does not answer. Errors wrap it and say what the init
// was asked and why it failed.
var ErrInit = containerinit.ErrInit
