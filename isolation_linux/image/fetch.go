package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// source is one place an image can come from: a mirror (anonymous) or the origin registry
// (with the caller's credentials).
type source struct {
	label  string // "mirror <host>" or "registry <host>", for errors and logs
	repo   name.Repository
	auth   authn.Authenticator
	creds  Credentials // the origin's, to scrub errors; zero for mirrors
	base   http.RoundTripper
	puller *remote.Puller

	mu     sync.Mutex
	client *http.Client // authenticated for pulls of repo; made on first blob fetch
}

func newSource(label string, repo name.Repository, creds Credentials, base http.RoundTripper) (*source, error) {
	auth := creds.authenticator()
	opts := []remote.Option{remote.WithAuth(auth), remote.WithUserAgent(userAgent)}
	if base != nil {
		opts = append(opts, remote.WithTransport(base))
	}
	p, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	if base == nil {
		base = remote.DefaultTransport
	}
	return &source{label: label, repo: repo, auth: auth, creds: creds, base: base, puller: p}, nil
}

// httpClient returns a client that authenticates to the source's registry for pulls of its
// repository (basic or token auth, whichever the registry asks for).
func (s *source) httpClient(ctx context.Context) (*http.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	base := transport.NewUserAgent(transport.NewRetry(s.base), userAgent)
	rt, err := transport.NewWithContext(ctx, s.repo.Registry, s.auth, base, []string{s.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	s.client = &http.Client{Transport: rt}
	return s.client, nil
}

// sources lists where ref can be pulled from: each mirror, then the origin.
func (st *Store) sources(ref name.Reference, creds Credentials) ([]*source, error) {
	var out []*source
	repoPath := ref.Context().RepositoryStr()
	for _, m := range st.cfg.Mirrors {
		reg, err := parseMirror(m, st.cfg.InsecureRegistries)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
		src, err := newSource("mirror "+reg.Name(), reg.Repo(repoPath), Credentials{}, st.cfg.Transport)
		if err != nil {
			return nil, err
		}
		out = append(out, src)
	}
	origin, err := newSource("registry "+ref.Context().RegistryStr(), ref.Context(), creds, st.cfg.Transport)
	if err != nil {
		return nil, err
	}
	return append(out, origin), nil
}

// attempts collects the failures of the sources tried in turn.
type attempts struct {
	errs []error
}

// err returns the last source's error (the origin's when every source failed), which keeps
// its class, with what the mirrors said appended.
func (a *attempts) err() error {
	if len(a.errs) == 0 {
		return nil
	}
	last := a.errs[len(a.errs)-1]
	if len(a.errs) == 1 {
		return last
	}
	var earlier []string
	for _, e := range a.errs[:len(a.errs)-1] {
		earlier = append(earlier, e.Error())
	}
	return fmt.Errorf("%w (tried before: %s)", last, strings.Join(earlier, "; "))
}

// blobSink receives a blob; reset discards what was written, before another source is tried.
type blobSink interface {
	io.Writer
	reset() error
}

// fetchBlob downloads the blob desc from the first source that serves it intact, writing it
// to sink and reporting bytes to progress. Content is hashed as it arrives and compared with
// desc's digest and size; a mismatch is ErrDigestMismatch saying what was received.
func fetchBlob(ctx context.Context, what string, srcs []*source, desc v1.Descriptor, sink blobSink, progress func(done int64)) error {
	if desc.Digest.Algorithm != "sha256" {
		return fmt.Errorf("%s %s: %w: digest algorithm %q is not supported", what, desc.Digest, ErrInvalidImage, desc.Digest.Algorithm)
	}
	var tried attempts
	for _, src := range srcs {
		err := fetchBlobFrom(ctx, what, src, desc, sink, progress)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		tried.errs = append(tried.errs, err)
		if rerr := sink.reset(); rerr != nil {
			return fmt.Errorf("%s %s: discarding a failed download: %w", what, desc.Digest, rerr)
		}
	}
	return tried.err()
}

func fetchBlobFrom(ctx context.Context, what string, src *source, desc v1.Descriptor, sink blobSink, progress func(done int64)) error {
	fail := func(err error) error {
		return remoteError(fmt.Sprintf("%s %s from %s", what, desc.Digest, src.label), err, src.creds)
	}
	client, err := src.httpClient(ctx)
	if err != nil {
		return fail(err)
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", src.repo.Scheme(), src.repo.RegistryStr(), src.repo.RepositoryStr(), desc.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return fail(err)
	}
	h := sha256.New()
	pw := &progressWriter{report: progress}
	// One byte more than announced, to tell an oversized blob from an exact one.
	n, err := io.Copy(io.MultiWriter(sink, h, pw), io.LimitReader(resp.Body, desc.Size+1))
	pw.flush()
	if err != nil && n < desc.Size {
		var werr *sinkError
		if errors.As(err, &werr) {
			return fmt.Errorf("%s %s: storing the download: %w", what, desc.Digest, werr.err)
		}
		return fail(err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case n != desc.Size:
		return fmt.Errorf("%s %s: %w: got %d bytes from %s, the manifest says %d", what, desc.Digest, ErrDigestMismatch, n, src.label, desc.Size)
	case got != desc.Digest.String():
		return fmt.Errorf("%s %s: %w: got %s from %s", what, desc.Digest, ErrDigestMismatch, got, src.label)
	}
	return nil
}

// sinkError marks a failure to write what was downloaded (a local problem, not the
// registry's).
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }

// progressWriter counts bytes and reports them at most every 100 ms, and at the end.
type progressWriter struct {
	report func(int64)
	n      int64
	last   time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.report != nil && time.Since(p.last) >= 100*time.Millisecond {
		p.last = time.Now()
		p.report(p.n)
	}
	return len(b), nil
}

func (p *progressWriter) flush() {
	if p.report != nil {
		p.report(p.n)
	}
}

// memSink collects a small blob (a config) in memory, refusing more than limit bytes.
type memSink struct {
	buf   []byte
	limit int
}

func (m *memSink) Write(b []byte) (int, error) {
	if len(m.buf)+len(b) > m.limit {
		return 0, &sinkError{fmt.Errorf("blob larger than %d bytes", m.limit)}
	}
	m.buf = append(m.buf, b...)
	return len(b), nil
}

func (m *memSink) reset() error { m.buf = m.buf[:0]; return nil }
