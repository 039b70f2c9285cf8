//go:build !windows

package installer

import "context"

// stopNative stops the service through kardianos/service, which waits as the init system
// does (System V: until the stop script returns).
func stopNative(ctx context.Context, n *nativeService) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.wrap("stop", n.svc.Stop())
}
