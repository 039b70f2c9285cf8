package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunBuildsEverythingWithSums(t *testing.T) {
	if _, err := exec.LookPath("wixl"); err != nil {
		t.Skip("wixl not found: install the Debian package wixl")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trellis")
	exe := filepath.Join(dir, "trellis.exe")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("MZ"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dist")
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"--version", "v2.1.0", "--out", out, "--linux-binary", bin, "--windows-exe", exe}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"trellis_2.1.0_amd64.deb", "trellis-agent_2.1.0_amd64.deb", "trellis-server_2.1.0_amd64.deb", "trellis-agent_2.1.0_x64.msi", "SHA256SUMS"}
	lines := strings.Fields(stdout.String())
	if len(lines) != len(want) {
		t.Fatalf("printed %q, want %d paths", lines, len(want))
	}
	for i, w := range want {
		if filepath.Base(lines[i]) != w {
			t.Errorf("path %d = %s, want %s", i, lines[i], w)
		}
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS is wrong for %s", name)
		}
	}
}

func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--out", dir, "--linux-binary", "/bin/sh"},
		{"--version", "1.0.0", "--out", dir},
		{"--version", "1.0.0", "--out", dir, "--windows-exe", "/bin/sh", "--sign-cert", filepath.Join(dir, "absent.pem")},
		{"--version", "1.0.0", "--no-such-flag"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
