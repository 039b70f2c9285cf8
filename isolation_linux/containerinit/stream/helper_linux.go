// Package stream unpacks and packs tar archives inside a container: the work of the
// container init's StreamIn and StreamOut. It runs in a helper process the init starts from
// its own binary (containerinit.StreamArgv0), in the container's namespaces and root, so that
// the init itself does not link archive/tar (see containerinit). Every path is resolved with
// openat2(RESOLVE_IN_ROOT) against the container's root, so neither ".." in an archive nor a
// symlink in the container (absolute or relative) can lead outside it.
package stream

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/trellis-run/trellis/isolation"
	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

// init takes over when this process is the init's stream helper. It runs after the rest of
// the program's packages initialised, which is fine for an operation that moves a droplet.
func init() {
	if len(os.Args) == 3 && os.Args[0] == containerinit.StreamArgv0 {
		os.Exit(helperMain(os.Args[1], os.Args[2]))
	}
}

// helperMain streams the archive on descriptor 0 into dst ("in") or the tree at dst out to
// descriptor 0 ("out"). It reports on the status pipe (containerinit.StreamArgv0): an error
// Response, or an empty one once the archive is unpacked or the stream starts.
func helperMain(op, dst string) int {
	status := os.NewFile(containerinit.FdStreamStatus, "status")
	data := os.NewFile(0, "archive")
	report := func(err error) {
		b, _ := json.Marshal(containerinit.ErrorResponse(err))
		_, _ = status.Write(b)
		status.Close()
	}
	switch op {
	case "in":
		err := extract(data, dst)
		report(err)
		if err != nil {
			return 1
		}
		return 0
	case "out":
		tw, err := newTarWriter(dst)
		report(err)
		if err != nil {
			return 1
		}
		if err := tw.writeTo(data); err != nil {
			fmt.Fprintf(os.Stderr, "stream-out %s: %v\n", dst, err)
			return 1
		}
		return 0
	}
	report(fmt.Errorf("%w: stream operation %q", isolation.ErrInvalidSpec, op))
	return 1
}
