package image

import (
	"context"
	"fmt"

	"github.com/trellis-run/trellis/bbs/models"
)

// Resolver is the registry-backed resolver the BBS pins image tags with (it implements
// bbs.ImageResolver; the BBS cannot import this package, so the program that builds the
// server plugs it in). Its zero value uses go-containerregistry's default transport.
type Resolver struct {
	Options ResolveOptions
}

// ResolveImage pins rootfs with Resolve and classes its errors as the BBS answers them: an
// image that cannot be used as given (malformed reference, no such repository or tag, access
// refused) is a *models.FieldError naming rootfs or the credential fields (422); an
// unreachable or failing registry, or the context's deadline, wraps models.ErrUnavailable
// (503). The password never appears in an error.
func (r Resolver) ResolveImage(ctx context.Context, rootfs, username, password string) (string, error) {
	creds := Credentials{Username: username, Password: password}
	pinned, err := Resolve(ctx, rootfs, creds, r.Options)
	if err == nil {
		return pinned, nil
	}
	switch {
	case IsInvalidReference(err), IsInvalidImage(err):
		return "", &models.FieldError{Field: "rootfs", Reason: err.Error()}
	case IsNotFound(err):
		return "", &models.FieldError{Field: "rootfs", Reason: fmt.Sprintf("%v (check the repository and tag)", err)}
	case IsUnauthorized(err) && creds.IsZero():
		return "", &models.FieldError{Field: "rootfs", Reason: fmt.Sprintf("%v: set image_username and image_password for a private image", err)}
	case IsUnauthorized(err):
		return "", &models.FieldError{Field: "image_password", Reason: fmt.Sprintf("%v: the registry refused image_username %q with this password", err, username)}
	}
	// ErrRegistry, or the context's error: worth retrying.
	return "", fmt.Errorf("%w: %w", models.ErrUnavailable, err)
}
