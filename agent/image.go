package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/trellis-run/trellis/agent/logs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// This file is how work on a registry image (a docker:// or oci:// rootfs) uses the image:
// the image's run configuration fills in what the work's run actions leave out, its first
// exposed port becomes the health check of an LRP that defines none, and the pull's progress
// goes to the instance's log and to its phase in the agent's API.

// errNoImageCommand: a run action gives no path and the image no entrypoint or command.
var errNoImageCommand = errors.New("the run action gives no path and the image defines no entrypoint or command")

// imageAuth is the registry login of a work's image for the backend.
func imageAuth(username, password string) isolation.ImageAuth {
	return isolation.ImageAuth{Username: username, Password: password}
}

// taskImageAuth returns the registry login of t. Tasks reach the agent through the event
// stream and lists, which never carry the password; a task with a username is read again,
// since the BBS gives the password to the cell the task is placed on.
func (a *Agent) taskImageAuth(t *models.Task) (isolation.ImageAuth, error) {
	if t.ImageUsername == "" || t.ImagePassword != "" {
		return imageAuth(t.ImageUsername, t.ImagePassword), nil
	}
	ctx, cancel := a.bbsCtx()
	defer cancel()
	full, err := a.store.Task(ctx, t.TaskGuid)
	if err != nil {
		return isolation.ImageAuth{}, err
	}
	return imageAuth(full.ImageUsername, full.ImagePassword), nil
}

// withImageLRP returns desired with its setup and action filled in from the image's run
// configuration (see applyImage) and, when it defines no health check, a TCP check of the
// image's first exposed port. desired is not changed; without an image it is returned as is.
// Errors: errNoImageCommand.
func withImageLRP(desired *models.DesiredLRP, img *isolation.ImageConfig) (*models.DesiredLRP, error) {
	if img == nil {
		return desired, nil
	}
	out := *desired
	var err error
	if out.Setup, err = applyImage(desired.Setup, img, desired.Env); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if out.Action, err = applyImage(desired.Action, img, desired.Env); err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	if desired.CheckDefinition == nil && len(img.ExposedPorts) > 0 {
		out.CheckDefinition = &models.CheckDefinition{Checks: []models.Check{{TCP: &models.TCPCheck{Port: img.ExposedPorts[0]}}}}
	}
	return &out, nil
}

// withImageTask is withImageLRP for a task (which has no health check).
func withImageTask(t *models.Task, img *isolation.ImageConfig) (*models.Task, error) {
	if img == nil {
		return t, nil
	}
	out := *t
	var err error
	if out.Action, err = applyImage(t.Action, img, t.Env); err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	return &out, nil
}

// applyImage returns a copy of the action tree a in which every run action takes from the
// image what it leaves out, as docker run does:
//   - no path: the image's entrypoint followed by the run's args, or by the image's cmd when
//     the run gives no args (no entrypoint: the first word of that command is the path);
//   - no dir: the image's working dir; no user: the image's user;
//   - env: the image's entries first, for every name that neither the work's env (workEnv)
//     nor the run's own env sets.
//
// Errors: errNoImageCommand.
func applyImage(a *models.Action, img *isolation.ImageConfig, workEnv []models.EnvironmentVariable) (*models.Action, error) {
	if a == nil {
		return nil, nil
	}
	c := *a
	var err error
	switch {
	case a.Run != nil:
		r := *a.Run
		if r.Path == "" {
			argv := append(append([]string(nil), img.Entrypoint...), img.Cmd...)
			if len(r.Args) > 0 {
				argv = append(append([]string(nil), img.Entrypoint...), r.Args...)
			}
			if len(argv) == 0 || argv[0] == "" {
				return nil, errNoImageCommand
			}
			r.Path, r.Args = argv[0], argv[1:]
		}
		if r.Dir == "" {
			r.Dir = img.WorkingDir
		}
		if r.User == "" {
			r.User = img.User
		}
		r.Env = imageEnv(img.Env, workEnv, r.Env)
		c.Run = &r
	case a.Timeout != nil:
		t := *a.Timeout
		t.Action, err = applyImage(t.Action, img, workEnv)
		c.Timeout = &t
	case a.Try != nil:
		t := *a.Try
		t.Action, err = applyImage(t.Action, img, workEnv)
		c.Try = &t
	case a.EmitProgress != nil:
		e := *a.EmitProgress
		e.Action, err = applyImage(e.Action, img, workEnv)
		c.EmitProgress = &e
	case a.Serial != nil:
		s := *a.Serial
		s.Actions, err = applyImageAll(s.Actions, img, workEnv)
		c.Serial = &s
	case a.Parallel != nil:
		p := *a.Parallel
		p.Actions, err = applyImageAll(p.Actions, img, workEnv)
		c.Parallel = &p
	case a.Codependent != nil:
		p := *a.Codependent
		p.Actions, err = applyImageAll(p.Actions, img, workEnv)
		c.Codependent = &p
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func applyImageAll(as []*models.Action, img *isolation.ImageConfig, workEnv []models.EnvironmentVariable) ([]*models.Action, error) {
	out := make([]*models.Action, len(as))
	for i, a := range as {
		var err error
		if out[i], err = applyImage(a, img, workEnv); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// imageEnv is the image's env entries whose names neither workEnv nor runEnv sets, followed
// by runEnv (the runner puts the work's env before a run's own).
func imageEnv(image []string, workEnv, runEnv []models.EnvironmentVariable) []models.EnvironmentVariable {
	set := map[string]bool{}
	for _, e := range workEnv {
		set[e.Name] = true
	}
	for _, e := range runEnv {
		set[e.Name] = true
	}
	var out []models.EnvironmentVariable
	for _, kv := range image {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" || set[name] {
			continue
		}
		set[name] = true
		out = append(out, models.EnvironmentVariable{Name: name, Value: value})
	}
	return append(out, runEnv...)
}

// pullProgress receives the backend's progress lines while a container is created: each
// complete line goes to the instance's cell log and becomes the container's phase (shown by
// the agent API and trellis lrp get), cleared by done.
type pullProgress struct {
	a   *Agent
	c   *container
	log *logs.Writer // nil when the log could not be opened

	mu   sync.Mutex
	line []byte
}

// newPullProgress opens the cell log of c's instance (index logs.NoIndex for a task).
func (a *Agent) newPullProgress(c *container, index int) *pullProgress {
	p := &pullProgress{a: a, c: c}
	if w, err := a.logs.Writer(logs.SourceCell, logs.Instance{Key: c.handle, Index: index}); err == nil {
		p.log = w
	} else {
		a.log.Warn("opening the instance log for the image pull", "handle", c.handle, "error", err)
	}
	return p
}

func (p *pullProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line = append(p.line, b...)
	for {
		i := bytes.IndexByte(p.line, '\n')
		if i < 0 {
			break
		}
		line := string(p.line[:i])
		p.line = p.line[i+1:]
		if p.log != nil {
			io.WriteString(p.log.Stdout(), line+"\n")
		}
		p.a.mu.Lock()
		p.c.phase = line
		p.a.mu.Unlock()
	}
	return len(b), nil
}

// done clears the phase and closes the log. It lets go of the log writer: a backend may keep
// the create's spec, and with it p, for the container's life.
func (p *pullProgress) done() {
	p.a.mu.Lock()
	p.c.phase = ""
	p.a.mu.Unlock()
	p.mu.Lock()
	w := p.log
	p.log, p.line = nil, nil
	p.mu.Unlock()
	if w != nil {
		w.Close()
	}
}
