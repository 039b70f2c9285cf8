//go:build !linux

package image

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// The store needs Linux (overlayfs whiteouts, ownership shifting); NewStore refuses to
// start elsewhere before any of these is reached.
var errNeedsLinux = fmt.Errorf("image store: %w: needs Linux", errors.ErrUnsupported)

func unpackLayer(context.Context, io.Reader, string, UIDMap) (string, error) {
	return "", errNeedsLinux
}

func diskUsage(string) (int64, error) { return 0, errNeedsLinux }

func syncFS(string) error { return errNeedsLinux }

func lockDir(string) (io.Closer, error) { return nil, errNeedsLinux }
