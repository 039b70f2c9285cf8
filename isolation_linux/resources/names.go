package resources

import (
	"fmt"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

const maxNameLen = 128

// validName checks a container handle (or one component of a cgroup parent): 1–128 of
// [A-Za-z0-9_.-], and not "." or "..", so it is always exactly one path element. A leading "@"
// is allowed too: isolation handles never hold one, so such a name (a backend's pooled init's
// cgroup, "@pool-...") can never collide with a container's.
func validName(field, name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: %s %q must be 1-%d characters", isolation.ErrInvalidSpec, field, name, maxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %s %q is not a valid name", isolation.ErrInvalidSpec, field, name)
	}
	if rest, ok := strings.CutPrefix(name, "@"); ok && rest != "" {
		name = rest
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'
		if !ok {
			return fmt.Errorf("%w: %s %q may hold only [A-Za-z0-9_.-]", isolation.ErrInvalidSpec, field, name)
		}
	}
	return nil
}

// cgroupPath validates parent (one or more names separated by "/") and handle and returns the
// cgroup's path relative to a hierarchy root, without a leading slash: "parent/handle".
func cgroupPath(parent, handle string) (string, error) {
	if err := validName("handle", handle); err != nil {
		return "", err
	}
	parent = strings.Trim(parent, "/")
	if parent == "" {
		return "", fmt.Errorf("%w: cgroup parent is empty; containers never live in the root cgroup", isolation.ErrInvalidSpec)
	}
	for _, part := range strings.Split(parent, "/") {
		if err := validName("cgroup parent component", part); err != nil {
			return "", err
		}
	}
	return parent + "/" + handle, nil
}

// Path is the path, relative to a hierarchy root, that New(parent, handle, ...) or
// Adopt(parent, ..., handle, ...) gives a cgroup: "parent/handle".
// Errors: isolation.ErrInvalidSpec (bad name).
func Path(parent, handle string) (string, error) { return cgroupPath(parent, handle) }
