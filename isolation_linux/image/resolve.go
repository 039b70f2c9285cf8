package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

const userAgent = "trellis"

// ResolveOptions tune how Resolve reaches a registry. The zero value is usable.
type ResolveOptions struct {
	// Transport carries the registry requests; nil means go-containerregistry's default
	// (HTTP/2, proxy from the environment, sane timeouts).
	Transport http.RoundTripper
	// InsecureRegistries are registry hosts ("host" or "host:port") reached over plain
	// HTTP. Loopback, localhost and RFC 1918 addresses always are.
	InsecureRegistries []string
}

// Resolve returns ref pinned to the digest of the manifest its tag names now, so that
// everything started from the result runs the same bytes even after the tag moves. ref is
// an image reference, "[registry/]repository[:tag][@digest]" (the form models.ParseRootFS
// returns; no tag means "latest"), or a whole docker:// or oci:// rootfs URI; the result
// has the same form, with "@sha256:…" appended and the tag kept for people to read (for
// example "docker:///busybox:1.36" → "docker:///busybox:1.36@sha256:…"). A reference that
// already has a digest is returned as it is, without asking the registry. For a
// multi-platform image the digest is the index's, so that every cell picks its own
// platform from the same index.
//
// Errors: ErrInvalidReference, ErrUnauthorized (with or without credentials), ErrNotFound
// (no such repository or tag), ErrRegistry (unreachable, or another registry error), or
// the context's error. auth's password never appears in them.
func Resolve(ctx context.Context, ref string, auth Credentials, opts ResolveOptions) (string, error) {
	prefix, imageRef, err := splitRootFSURI(ref)
	if err != nil {
		return "", err
	}
	r, err := parseReference(imageRef, opts.InsecureRegistries)
	if err != nil {
		return "", err
	}
	if _, ok := r.(name.Digest); ok {
		return prefix + imageRef, nil
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth.authenticator()), remote.WithUserAgent(userAgent)}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	// HEAD is enough and does not count against pull rate limits; some registries do not
	// return a digest for HEAD, so fall back to GET (which hashes the body).
	desc, err := remote.Head(r, ropts...)
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		var got *remote.Descriptor
		got, err = remote.Get(r, ropts...)
		if err == nil {
			desc = &got.Descriptor
		}
	}
	if err != nil {
		return "", remoteError(fmt.Sprintf("resolving image %s", imageRef), err, auth)
	}
	return prefix + imageRef + "@" + desc.Digest.String(), nil
}

// splitRootFSURI splits "docker:///repo", "docker://registry/repo" or "oci://…" into the
// part to keep ("docker:///" or "docker://") and the image reference (with a Diego "#tag"
// turned into ":tag"). A bare reference has no prefix.
func splitRootFSURI(ref string) (prefix, imageRef string, err error) {
	for _, scheme := range []string{"docker://", "oci://"} {
		rest, ok := strings.CutPrefix(ref, scheme)
		if !ok {
			continue
		}
		prefix = scheme
		if after, ok := strings.CutPrefix(rest, "/"); ok {
			prefix, rest = scheme+"/", after
		}
		if i := strings.IndexByte(rest, '#'); i >= 0 {
			rest = rest[:i] + ":" + rest[i+1:]
		}
		if rest == "" {
			return "", "", fmt.Errorf("%w: %q names no repository", ErrInvalidReference, ref)
		}
		return prefix, rest, nil
	}
	if strings.Contains(ref, "://") || strings.HasPrefix(ref, "preloaded:") {
		return "", "", fmt.Errorf("%w: %q: only docker:// and oci:// images can be resolved", ErrInvalidReference, ref)
	}
	return "", ref, nil
}

// parseReference parses an image reference; a missing tag means "latest" and a missing
// registry Docker Hub, as everywhere else.
func parseReference(ref string, insecure []string) (name.Reference, error) {
	var nopts []name.Option
	if len(insecure) > 0 {
		if r, err := name.ParseReference(ref); err == nil && slices.Contains(insecure, r.Context().RegistryStr()) {
			nopts = append(nopts, name.Insecure)
		}
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidReference, ref, err)
	}
	return r, nil
}

// classify maps an error of go-containerregistry to one of this package's classes.
func classify(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			return ErrUnauthorized
		case terr.StatusCode == http.StatusNotFound:
			return ErrNotFound
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ErrUnauthorized
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return ErrNotFound
			}
		}
	}
	return ErrRegistry
}

// remoteError wraps an error of a registry request: what failed, its class, and, for a
// refusal, what to check. Context errors keep their identity. The password is scrubbed.
func remoteError(what string, err error, auth Credentials) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return auth.scrub(fmt.Errorf("%s: %w", what, err))
	}
	class := classify(err)
	hint := ""
	if class == ErrUnauthorized {
		if auth.IsZero() {
			hint = " (the registry wants credentials and none were given)"
		} else {
			hint = " (check the registry credentials)"
		}
	}
	return auth.scrub(fmt.Errorf("%s: %w%s: %v", what, class, hint, err))
}
