package models

import (
	"strings"
	"unicode/utf8"
)

// Bounds of the registry credentials of a DesiredLRP or Task.
const (
	MaxImageUsernameBytes = 256
	MaxImagePasswordBytes = 4096
)

// IsImageRootFS reports whether rootfs names a registry image (docker:// or oci://), whose
// run configuration may fill in what a run action leaves empty.
func IsImageRootFS(rootfs string) bool {
	switch RootFSScheme(rootfs) {
	case RootFSSchemeDocker, RootFSSchemeOCI:
		return true
	}
	return false
}

// RedactSecrets returns a copy of d without ImagePassword, for every reader but the cell the
// work is placed on. A nil d stays nil.
func (d *DesiredLRP) RedactSecrets() *DesiredLRP {
	if d == nil || d.ImagePassword == "" {
		return d
	}
	c := *d
	c.ImagePassword = ""
	return &c
}

// RedactSecrets returns a copy of t without ImagePassword (see DesiredLRP.RedactSecrets).
func (t *Task) RedactSecrets() *Task {
	if t == nil || t.ImagePassword == "" {
		return t
	}
	c := *t
	c.ImagePassword = ""
	return &c
}

// checkImageCredentials checks image_username and image_password: both or neither, only for
// a docker:// or oci:// rootfs, bounded, a username without ':' or control characters (it
// goes into HTTP basic auth). No message quotes the password.
func checkImageCredentials(rootfs, username, password string) error {
	if username == "" && password == "" {
		return nil
	}
	if !IsImageRootFS(rootfs) {
		return fieldErr("image_username", "registry credentials apply only to a docker:// or oci:// rootfs, not %q", rootfs)
	}
	if username == "" {
		return fieldErr("image_username", "is required with image_password")
	}
	if password == "" {
		return fieldErr("image_password", "is required with image_username")
	}
	if err := checkMaxBytes("image_username", len(username), MaxImageUsernameBytes, "256 bytes"); err != nil {
		return err
	}
	if !utf8.ValidString(username) || strings.ContainsAny(username, ":") || strings.IndexFunc(username, isControl) >= 0 {
		return fieldErr("image_username", "must be UTF-8 without ':' or control characters")
	}
	if len(password) > MaxImagePasswordBytes {
		return fieldErr("image_password", "is longer than %d bytes", MaxImagePasswordBytes)
	}
	if strings.IndexFunc(password, isControl) >= 0 {
		return fieldErr("image_password", "must not contain control characters")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
