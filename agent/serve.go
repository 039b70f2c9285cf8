package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/client"
)

// drainGrace is what Serve allows a drain beyond EvacuationTimeout (tasks finishing, the last
// BBS calls) before it gives up and leaves the remaining containers running.
const drainGrace = time.Minute

// bbsConns bounds the agent's connections to the BBS (its event stream included). Placing
// hundreds of instances on a cell at once starts as many claims together; unbounded, each
// opened a connection (a TLS handshake on both sides, for one request) and closed it again.
// Requests beyond the bound wait for a connection, which is cheaper than making one.
const bbsConns = 16

// NewBBSClient returns the client of the BBS the agent's configuration names, authenticated as
// the cell (certificate CommonName "cell:<cell_id>", or that identity in insecure mode).
func NewBBSClient(cfg Config) (*client.Client, error) {
	cc := client.DefaultConfig()
	cc.URL, cc.CAFile, cc.CertFile, cc.KeyFile, cc.Insecure = cfg.BBS.URL, cfg.BBS.CAFile, cfg.BBS.CertFile, cfg.BBS.KeyFile, cfg.BBS.Insecure
	if cfg.BBS.Insecure {
		cc.Identity = certs.Identity{Role: certs.RoleCell, CellID: cfg.CellID}.String()
	}
	cc.MaxConns = bbsConns
	c, err := client.New(cc)
	if err != nil {
		return nil, fmt.Errorf("agent: bbs client: %w", err)
	}
	return c, nil
}

// Serve runs an agent as a service (what `trellis agent run` does): it connects to the BBS,
// runs the agent until stop ends — the service stop — and then drains the cell as DESIGN §5
// says (instances evacuated, tasks finished, presence removed) before it returns. A drain
// asked for through the BBS ends it the same way. If the drain outlasts EvacuationTimeout plus
// a minute, Serve returns anyway and the remaining containers keep running.
func Serve(stop context.Context, cfg Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bbs, err := NewBBSClient(cfg)
	if err != nil {
		return err
	}
	defer bbs.Close()
	a, err := New(stop, cfg, Options{Store: bbs, Logger: logger})
	if err != nil {
		return err
	}
	defer a.Close()

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	logger.Info("agent started", "cell", cfg.CellID, "backend", cfg.Backend, "capacity", a.Capacity())
	select {
	case err := <-done:
		return err
	case <-stop.Done():
	}
	logger.Info("stopping: draining the cell first", "evacuation_timeout", time.Duration(cfg.EvacuationTimeout))
	a.Drain()
	limit := time.NewTimer(time.Duration(cfg.EvacuationTimeout) + drainGrace)
	defer limit.Stop()
	select {
	case err := <-done:
		return err
	case <-limit.C:
		cancel()
		<-done
		return errors.New("agent: the drain did not finish in time; containers left running")
	}
}
