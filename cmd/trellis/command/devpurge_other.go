//go:build !linux

package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// purgeDevCluster: dev clusters run Linux cells only.
func purgeDevCluster(context.Context, string, *slog.Logger) (int, error) {
	return 0, fmt.Errorf("dev purge: dev clusters run Linux cells only: %w", errors.ErrUnsupported)
}
