package actions

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

// checkStreamUser refuses a user the isolation interface cannot honour for StreamIn and
// StreamOut (they have no user parameter: files are written and read as the container's root).
func checkStreamUser(action, user string) error {
	if user == "" || user == "root" || user == "0" {
		return nil
	}
	return fmt.Errorf("%s as user %q: streaming files as a user other than root: %w", action, user, isolation.ErrUnsupported)
}

func (r *Runner) download(ctx context.Context, d *models.DownloadAction) error {
	what := fmt.Sprintf("download %s to %s", redactURL(d.From), d.To)
	if err := checkStreamUser(what, d.User); err != nil {
		return err
	}
	if r.cfg.Cache == nil {
		return fmt.Errorf("%s: the runner has no download cache: %w", what, ErrInvalidAction)
	}
	rc, size, err := r.cfg.Cache.Fetch(ctx, d.From, d.CacheKey, d.ChecksumAlgorithm, d.ChecksumValue)
	if err != nil {
		return r.transferError(ctx, what, ErrDownload, err)
	}
	defer rc.Close()
	stream, err := archiveStream(rc, size, d.From)
	if err != nil {
		return r.transferError(ctx, what, ErrDownload, err)
	}
	defer stream.Close()
	if err := r.cfg.Container.StreamIn(ctx, d.To, stream); err != nil {
		return r.transferError(ctx, what, ErrDownload, err)
	}
	return nil
}

// transferError wraps a download or upload failure, or reports the cancellation that
// caused it.
func (r *Runner) transferError(ctx context.Context, what string, class, err error) error {
	if ctx.Err() != nil {
		return &cancelledError{what: what, cause: context.Cause(ctx)}
	}
	return fmt.Errorf("%s: %w: %w", what, class, err)
}

// archiveStream returns the tar stream to unpack for a downloaded artifact: the artifact
// itself when it is a tar, its decompressed content when it is a gzipped tar, and otherwise a
// tar holding the artifact as one file named after the URL's base name.
func archiveStream(rc io.ReadCloser, size int64, rawURL string) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read artifact: %w", err)
	}
	if isTarHeader(head) {
		// A tar in a file (the download cache's case) is handed over rewound and with its
		// descriptor (syscall.Conn), so that a backend can give the file itself to the
		// container rather than copy it through a pipe.
		if f, ok := rc.(seekableFile); ok {
			if _, err := f.Seek(0, io.SeekStart); err == nil {
				return fileStream{f}, nil
			}
		}
		return io.NopCloser(br), nil
	}
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read gzip artifact: %w", err)
		}
		zbr := bufio.NewReaderSize(zr, 64<<10)
		inner, err := zbr.Peek(512)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read gzip artifact: %w", err)
		}
		if isTarHeader(inner) {
			return io.NopCloser(zbr), nil
		}
		// A gzipped file that is not a tar (say app.js.gz) is delivered as downloaded.
		seeker, ok := rc.(io.Seeker)
		if !ok {
			return nil, fmt.Errorf("artifact is gzip but not a tar, and cannot be re-read to deliver it as a file")
		}
		if _, err := seeker.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind artifact: %w", err)
		}
		br = bufio.NewReaderSize(rc, 64<<10)
	}
	name, err := artifactName(rawURL)
	if err != nil {
		return nil, err
	}
	return singleFileTar(br, name, size), nil
}

// seekableFile is an artifact in a file: the cache's readers are.
type seekableFile interface {
	io.ReadSeeker
	syscall.Conn
}

// fileStream is a tar artifact read straight from its file. Closing it leaves the file to
// the artifact's owner.
type fileStream struct{ seekableFile }

func (fileStream) Close() error { return nil }

// isTarHeader reports whether block begins with a POSIX (ustar) or GNU tar header.
func isTarHeader(block []byte) bool {
	if len(block) < 512 {
		return false
	}
	if !bytes.HasPrefix(block[257:], []byte("ustar")) {
		return false
	}
	_, err := tar.NewReader(bytes.NewReader(block)).Next()
	// A header block parses on its own unless its entry needs following extension blocks,
	// which read past the block: io.ErrUnexpectedEOF then still means a tar.
	return err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// artifactName is the file name a non-archive artifact gets: the base name of the URL's path.
func artifactName(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("artifact name: %w", err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" || name == ".." || strings.ContainsAny(name, `\:`) {
		return "", fmt.Errorf("artifact from %s is not an archive, and its URL path %q has no usable file name", rawURL, u.Path)
	}
	return name, nil
}

// singleFileTar streams a tar holding content as one 0644 file.
func singleFileTar(content io.Reader, name string, size int64) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Mode:     0o644,
			Size:     size,
			ModTime:  time.Now(),
			Format:   tar.FormatPAX,
		}
		err := tw.WriteHeader(hdr)
		if err == nil {
			_, err = io.CopyN(tw, content, size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func (r *Runner) upload(ctx context.Context, u *models.UploadAction) error {
	what := fmt.Sprintf("upload %s to %s", u.From, redactURL(u.To))
	if err := checkStreamUser(what, u.User); err != nil {
		return err
	}
	rc, err := r.cfg.Container.StreamOut(ctx, u.From)
	if err != nil {
		return r.transferError(ctx, what, ErrUpload, err)
	}
	defer rc.Close()
	body, length, contentType, err := uploadBody(rc)
	if err != nil {
		return r.transferError(ctx, what, ErrUpload, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.To, body)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", what, ErrInvalidAction, err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", contentType)
	client := r.cfg.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text repeats the whole URL
		}
		return r.transferError(ctx, what, ErrUpload, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %w: unexpected HTTP status %s", what, ErrUpload, resp.Status)
	}
	return nil
}

// uploadBody returns what to PUT for a StreamOut stream: the content of a single regular file
// (StreamOut of a file yields one member named after it), else the tar stream itself. length
// is -1 when unknown.
func uploadBody(stream io.Reader) (io.Reader, int64, string, error) {
	br := bufio.NewReaderSize(stream, 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, "", fmt.Errorf("read the container's tar stream: %w", err)
	}
	if len(head) == 512 {
		hdr, err := tar.NewReader(bytes.NewReader(head)).Next()
		if err == nil && hdr.Typeflag == tar.TypeReg && !strings.Contains(strings.TrimSuffix(hdr.Name, "/"), "/") {
			tr := tar.NewReader(br)
			hdr, err := tr.Next()
			if err != nil {
				return nil, 0, "", fmt.Errorf("read the container's tar stream: %w", err)
			}
			return tr, hdr.Size, "application/octet-stream", nil
		}
	}
	return br, -1, "application/x-tar", nil
}

// redactURL drops credentials and the query from a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<malformed URL>"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}
