package containerinit

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/trellis-run/trellis/isolation"
)

// ExecUser is a resolved process user inside a container.
type ExecUser struct {
	UID, GID uint32
	// Groups are the supplementary groups from the container's /etc/group.
	Groups []uint32
	// Name and Home come from /etc/passwd when the user is listed there.
	Name, Home string
}

// ResolveUser resolves a ProcessSpec.User ("" for root, a name, "uid", "uid:gid", "name:gid")
// against the container's /etc/passwd and /etc/group (either may be nil). A numeric uid that
// passwd does not list is allowed; an unknown name is not. Errors wrap
// isolation.ErrInvalidSpec.
func ResolveUser(spec string, passwd, group io.Reader) (ExecUser, error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	entries, err := parsePasswd(passwd)
	if err != nil {
		return ExecUser{}, err
	}
	var u ExecUser
	found := false
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		u.GID = uint32(id)
		for _, e := range entries {
			if e.UID == u.UID {
				u, found = e, true
				break
			}
		}
		if !found && u.UID == 0 {
			u.Name, u.Home = "root", "/root"
		}
	} else {
		for _, e := range entries {
			if e.Name == userPart {
				u, found = e, true
				break
			}
		}
		if !found {
			return ExecUser{}, fmt.Errorf("%w: User %q: no such user in the container's /etc/passwd", isolation.ErrInvalidSpec, spec)
		}
	}
	groups, err := parseGroup(group)
	if err != nil {
		return ExecUser{}, err
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			gid, ok := uint32(0), false
			for _, g := range groups {
				if g.name == groupPart {
					gid, ok = g.gid, true
					break
				}
			}
			if !ok {
				return ExecUser{}, fmt.Errorf("%w: User %q: no such group in the container's /etc/group", isolation.ErrInvalidSpec, spec)
			}
			u.GID = gid
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	if u.Name != "" {
		for _, g := range groups {
			for _, m := range g.members {
				if m == u.Name && g.gid != u.GID {
					u.Groups = append(u.Groups, g.gid)
				}
			}
		}
	}
	return u, nil
}

func parsePasswd(r io.Reader) ([]ExecUser, error) {
	if r == nil {
		return nil, nil
	}
	var out []ExecUser
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 7 {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, ExecUser{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5]})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading /etc/passwd: %v", isolation.ErrInvalidSpec, err)
	}
	return out, nil
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

func parseGroup(r io.Reader) ([]groupEntry, error) {
	if r == nil {
		return nil, nil
	}
	var out []groupEntry
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		g := groupEntry{name: f[0], gid: uint32(gid)}
		if f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading /etc/group: %v", isolation.ErrInvalidSpec, err)
	}
	return out, nil
}
