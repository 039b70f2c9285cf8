// Command trellis-packages builds trellis's installers: the trellis, trellis-agent and
// trellis-server .deb packages and the Windows cell's MSI, optionally Authenticode-signed.
// `make packages` runs it through hack/packages.sh; it is a separate program so that the
// trellis binary does not link nfpm.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/trellis-run/trellis/installer/deb"
	"github.com/trellis-run/trellis/installer/msi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "trellis-packages: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("trellis-packages", flag.ContinueOnError)
	var (
		version    = fs.String("version", "", "trellis version (a tag or git describe string); required")
		out        = fs.String("out", "dist", "output directory")
		linuxBin   = fs.String("linux-binary", "", "Linux trellis binary for the .deb packages (empty: no .deb)")
		arch       = fs.String("arch", "amd64", "Debian architecture of --linux-binary")
		windowsExe = fs.String("windows-exe", "", "Windows amd64 trellis.exe for the MSI (empty: no MSI)")
		signCert   = fs.String("sign-cert", "", "Authenticode certificate chain (PEM); signs trellis.exe and the MSI")
		signKey    = fs.String("sign-key", "", "its private key (PEM)")
		signP12    = fs.String("sign-pkcs12", "", "a .pfx instead of --sign-cert and --sign-key")
		signPassEv = fs.String("sign-password-env", "", "name of the environment variable holding the key's password")
		tsURL      = fs.String("timestamp-url", "", "RFC 3161 timestamp server for the signatures")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" {
		return errors.New("--version is required")
	}
	if *linuxBin == "" && *windowsExe == "" {
		return errors.New("give --linux-binary, --windows-exe or both")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sign := msi.SignConfig{CertFile: *signCert, KeyFile: *signKey, PKCS12File: *signP12, TimestampURL: *tsURL,
		URL: "https://github.com/trellis-run/trellis"}
	if *signPassEv != "" {
		sign.Password = os.Getenv(*signPassEv)
	}
	if sign.Enabled() {
		if err := sign.Validate(); err != nil {
			return err
		}
	}
	var built []string
	if *linuxBin != "" {
		cfg := deb.DefaultConfig()
		cfg.Version, cfg.Binary, cfg.Arch, cfg.OutDir = *version, *linuxBin, *arch, *out
		paths, err := deb.Build(ctx, cfg)
		if err != nil {
			return err
		}
		built = append(built, paths...)
	}
	if *windowsExe != "" {
		exe := *windowsExe
		if sign.Enabled() {
			// Sign a copy so the build's own output stays as the compiler wrote it.
			stage, err := os.MkdirTemp("", "trellis-packages-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(stage)
			exe = filepath.Join(stage, "trellis.exe")
			if err := copyFile(*windowsExe, exe); err != nil {
				return err
			}
			if err := msi.Sign(ctx, sign, exe); err != nil {
				return err
			}
			log.Info("signed", "file", "trellis.exe")
		}
		cfg := msi.DefaultConfig()
		cfg.Version, cfg.Exe, cfg.OutDir = *version, exe, *out
		path, err := msi.Build(ctx, cfg)
		if err != nil {
			return err
		}
		if sign.Enabled() {
			if err := msi.Sign(ctx, sign, path); err != nil {
				return err
			}
			log.Info("signed", "file", filepath.Base(path))
		}
		built = append(built, path)
	}
	sums, err := writeSums(*out, built)
	if err != nil {
		return err
	}
	for _, p := range append(built, sums) {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeSums writes SHA256SUMS for the built files (in `sha256sum -c` format) into dir.
func writeSums(dir string, files []string) (string, error) {
	var lines []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		lines = append(lines, hex.EncodeToString(sum[:])+"  "+filepath.Base(f))
	}
	sort.Strings(lines)
	path := filepath.Join(dir, "SHA256SUMS")
	return path, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
