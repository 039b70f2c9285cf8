package image

import "errors"

// Error classes. Every error this package returns wraps at most one of them (or a context
// error), so callers can branch with errors.Is or the IsX helpers.
var (
	// ErrInvalidReference: the image reference cannot be parsed.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("registry denied access")
	// ErrNotFound: the registry has no such repository, tag or digest, or the store has no
	// such image.
	ErrNotFound = errors.New("image not found")
	// ErrRegistry: the registry could not be reached or answered with an error other than
	// the ones above (after the transport's retries).
	ErrRegistry = errors.New("registry unavailable")
	// ErrDigestMismatch: content fetched from a registry does not hash to the digest that
	// names it. Nothing of such content is kept.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidImage: the image is well-fetched but unusable here: no manifest for this
	// platform, an unsupported media type, a layer that escapes its directory or owns files
	// outside the container's uid range.
	ErrInvalidImage = errors.New("invalid image")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("image store closed")
)

// IsInvalidReference reports whether err is of class ErrInvalidReference.
func IsInvalidReference(err error) bool { return errors.Is(err, ErrInvalidReference) }

// IsUnauthorized reports whether err is of class ErrUnauthorized.
func IsUnauthorized(err error) bool { return errors.Is(err, ErrUnauthorized) }

// IsNotFound reports whether err is of class ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsRegistry reports whether err is of class ErrRegistry.
func IsRegistry(err error) bool { return errors.Is(err, ErrRegistry) }

// IsDigestMismatch reports whether err is of class ErrDigestMismatch.
func IsDigestMismatch(err error) bool { return errors.Is(err, ErrDigestMismatch) }

// IsInvalidImage reports whether err is of class ErrInvalidImage.
func IsInvalidImage(err error) bool { return errors.Is(err, ErrInvalidImage) }

// ErrInvalidConfig: a Config field is out of range; the message names it.
var ErrInvalidConfig = errors.New("invalid image store config")
