package models

import (
	"strings"
	"testing"
)

func TestParseRootFS(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a1", 32)
	tests := []struct {
		uri    string
		scheme string
		rest   string
		reason string // substring of the refusal; "" = accepted
	}{
		{"preloaded:cflinuxfs4", "preloaded", "cflinuxfs4", ""},
		{"preloaded:windows2019.fs-1_a", "preloaded", "windows2019.fs-1_a", ""},
		{"docker:///busybox", "docker", "busybox", ""},
		{"docker:///cloudfoundry/grace:latest", "docker", "cloudfoundry/grace:latest", ""},
		{"docker:///cloudfoundry/grace#v1.0", "docker", "cloudfoundry/grace:v1.0", ""},
		{"docker:///library/alpine@" + digest, "docker", "library/alpine@" + digest, ""},
		{"docker:///library/alpine:3.20@" + digest, "docker", "library/alpine:3.20@" + digest, ""},
		{"docker://registry.example.com/team/app", "docker", "registry.example.com/team/app", ""},
		{"docker://localhost:5000/a/b-c__d.e:tag_1", "docker", "localhost:5000/a/b-c__d.e:tag_1", ""},
		{"docker://Registry.Example.com/a", "docker", "Registry.Example.com/a", ""},
		{"oci:///library/alpine:3.20", "oci", "library/alpine:3.20", ""},
		{"oci://ghcr.io/org/image@" + digest, "oci", "ghcr.io/org/image@" + digest, ""},
		{"docker:///a--b", "docker", "a--b", ""},

		{"", "", "", "is required"},
		{"cflinuxfs4", "", "", "has no scheme"},
		{":stack", "", "", "has no scheme"},
		{"ftp://images/x", "", "", `unknown rootfs scheme "ftp" (want preloaded, docker or oci)`},
		{"Docker:///busybox", "", "", `unknown rootfs scheme "Docker"`},
		{"preloaded:", "", "", "empty stack name"},
		{"preloaded:cf linux", "", "", "stack name has ' ' at byte 2"},
		{"preloaded:" + strings.Repeat("s", 129), "", "", "longer than 128"},
		{"docker:busybox", "", "", "want //<registry>/<repository>"},
		{"docker://busybox", "", "", "no repository after the registry"},
		{"docker:///", "", "", "empty repository"},
		{"docker:///Busybox", "", "", "must start and end with a lower-case letter"},
		{"docker:///busyBox", "", "", "has 'B'"},
		{"docker:///a//b", "", "", "empty path component"},
		{"docker:///a/", "", "", "empty path component"},
		{"docker:///a..b", "", "", "misplaced separator"},
		{"docker:///a___b", "", "", "misplaced separator"},
		{"docker:///a-.b", "", "", "misplaced separator"},
		{"docker:///-a", "", "", "must start and end"},
		{"docker:///a:", "", "", "empty tag after ':'"},
		{"docker:///a#", "", "", "empty tag after '#'"},
		{"docker:///a:b#c", "", "", "both a ':' tag and a '#' tag"},
		{"docker:///a:.bad", "", "", "invalid tag"},
		{"docker:///a:" + strings.Repeat("t", 129), "", "", "tag longer than 128"},
		{"docker:///a@sha256:abc", "", "", "must have 64 hex digits"},
		{"docker:///a@md5:" + strings.Repeat("0", 32), "", "", "is not sha256 or sha512"},
		{"docker:///a@sha256:" + strings.Repeat("A", 64), "", "", "lower-case hex"},
		{"docker:///a@", "", "", "is not algorithm:hex"},
		{"docker://reg:0/a", "", "", "registry port"},
		{"docker://reg:99999/a", "", "", "registry port"},
		{"docker://reg:/a", "", "", "registry port"},
		{"docker://:5000/a", "", "", "empty registry host"},
		{"docker://-reg/a", "", "", "invalid registry host"},
		{"docker://re_g/a", "", "", "invalid registry host"},
		{"docker://reg..io/a", "", "", "invalid registry host"},
		{"docker:///a?x=1", "", "", "has '?'"},
		{"docker:///" + strings.Repeat("a", 600), "", "", "longer than 512"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			scheme, rest, err := ParseRootFS(tt.uri)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if scheme != tt.scheme || rest != tt.rest {
					t.Fatalf("got (%q, %q), want (%q, %q)", scheme, rest, tt.scheme, tt.rest)
				}
				return
			}
			assertField(t, err, "rootfs")
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %q does not say %q", err, tt.reason)
			}
			if scheme != "" || rest != "" {
				t.Fatalf("a refusal returned (%q, %q)", scheme, rest)
			}
		})
	}
}

func TestRootFSHelpers(t *testing.T) {
	if got := PreloadedRootFS("cflinuxfs4"); got != "preloaded:cflinuxfs4" {
		t.Fatalf("PreloadedRootFS = %q", got)
	}
	schemes := map[string]string{
		"preloaded:x": "preloaded", "docker:///a": "docker", "oci://r/a": "oci", "nocolon": "", ":x": "", "": "",
	}
	for uri, want := range schemes {
		if got := RootFSScheme(uri); got != want {
			t.Errorf("RootFSScheme(%q) = %q, want %q", uri, got, want)
		}
	}
	stacks := []struct {
		uri   string
		stack string
		ok    bool
	}{
		{"preloaded:cflinuxfs4", "cflinuxfs4", true},
		{"preloaded:", "", false},
		{"docker:///cflinuxfs4", "", false},
		{"cflinuxfs4", "", false},
	}
	for _, tt := range stacks {
		if stack, ok := RootFSStack(tt.uri); stack != tt.stack || ok != tt.ok {
			t.Errorf("RootFSStack(%q) = %q, %v; want %q, %v", tt.uri, stack, ok, tt.stack, tt.ok)
		}
	}
}

func TestRequiredRootFSProvider(t *testing.T) {
	tests := []struct {
		rootfs string
		want   string
		ok     bool
	}{
		{"preloaded:cflinuxfs4", "preloaded:cflinuxfs4", true},
		{"docker:///busybox", "docker", true},
		{"oci://r.io/a", "oci", true},
		{"preloaded:", "", false},
		{"busybox", "", false},
		{":x", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := RequiredRootFSProvider(tt.rootfs)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("RequiredRootFSProvider(%q) = %q, %v; want %q, %v", tt.rootfs, got, ok, tt.want, tt.ok)
		}
	}
}

// The auctioneer's rootfs filter: a preloaded stack needs that exact provider; another scheme
// needs the bare scheme.
func TestRootFSProvidedBy(t *testing.T) {
	linux := []string{"preloaded:cflinuxfs4", "docker"}
	windows := []string{"preloaded:windows2019"}
	tests := []struct {
		rootfs    string
		providers []string
		want      bool
	}{
		{"preloaded:cflinuxfs4", linux, true},
		{"preloaded:cflinuxfs3", linux, false},
		{"preloaded:cflinuxfs", linux, false},
		{"preloaded:windows2019", linux, false},
		{"preloaded:windows2019", windows, true},
		{"docker:///busybox", linux, true},
		{"docker://reg.io/a:1", linux, true},
		{"docker:///busybox", windows, false},
		{"oci:///busybox", linux, false},
		{"oci:///busybox", []string{"oci"}, true},
		{"preloaded:cflinuxfs4", []string{"preloaded"}, false},
		{"docker:///busybox", []string{"docker:///busybox"}, false},
		{"docker:///busybox", nil, false},
		{"busybox", []string{"busybox", "docker"}, false},
		{"preloaded:", []string{"preloaded:", "preloaded"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.rootfs+" on "+strings.Join(tt.providers, ","), func(t *testing.T) {
			if got := RootFSProvidedBy(tt.rootfs, tt.providers); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// Every provider a cell may announce validates, and every rootfs a record may carry can be
// matched by some provider.
func TestRootFSProvidersAgreeWithParse(t *testing.T) {
	for _, uri := range []string{"preloaded:cflinuxfs4", "docker:///busybox", "oci://r.io/a"} {
		scheme, _, err := ParseRootFS(uri)
		if err != nil {
			t.Fatal(err)
		}
		provider := scheme
		if scheme == RootFSSchemePreloaded {
			provider = uri
		}
		if err := ValidateRootFSProvider("p", provider); err != nil {
			t.Errorf("provider %q for %q does not validate: %v", provider, uri, err)
		}
		if !RootFSProvidedBy(uri, []string{provider}) {
			t.Errorf("provider %q does not provide %q", provider, uri)
		}
	}
}
