package models

import (
	"errors"
	"strings"
	"testing"
)

func TestImageCredentialsValidation(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	tests := []struct {
		name   string
		rootfs string
		user   string
		pass   string
		field  string // "" means valid
	}{
		{"none on a preloaded rootfs", "preloaded:cflinuxfs4", "", "", ""},
		{"both on a docker image", "docker:///acme/app:1", "robot", secret, ""},
		{"both on an oci image", "oci://registry.example.com/acme/app@sha256:" + strings.Repeat("a", 64), "robot", secret, ""},
		{"credentials on a preloaded rootfs", "preloaded:cflinuxfs4", "robot", secret, "image_username"},
		{"password without username", "docker:///acme/app", "", secret, "image_username"},
		{"username without password", "docker:///acme/app", "robot", "", "image_password"},
		{"username with a colon", "docker:///acme/app", "ro:bot", secret, "image_username"},
		{"username with a newline", "docker:///acme/app", "ro\nbot", secret, "image_username"},
		{"username too long", "docker:///acme/app", strings.Repeat("u", MaxImageUsernameBytes+1), secret, "image_username"},
		{"password too long", "docker:///acme/app", "robot", strings.Repeat("p", MaxImagePasswordBytes+1), "image_password"},
		{"password with a control character", "docker:///acme/app", "robot", secret + "\x00", "image_password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lrp := validLRP()
			lrp.RootFS, lrp.ImageUsername, lrp.ImagePassword = tt.rootfs, tt.user, tt.pass
			task := validTask()
			task.RootFS, task.ImageUsername, task.ImagePassword = tt.rootfs, tt.user, tt.pass
			for kind, err := range map[string]error{"lrp": lrp.Validate(), "task": task.Validate()} {
				if tt.field == "" {
					if err != nil {
						t.Fatalf("%s: want valid, got %v", kind, err)
					}
					continue
				}
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.field {
					t.Fatalf("%s: want a FieldError on %s, got %v", kind, tt.field, err)
				}
				if tt.pass != "" && strings.Contains(err.Error(), tt.pass) {
					t.Fatalf("%s: the error quotes the password: %v", kind, err)
				}
			}
		})
	}
}

func TestRunPathOptionalOnlyForImages(t *testing.T) {
	tests := []struct {
		rootfs string
		ok     bool
	}{
		{"docker:///acme/app:1", true},
		{"oci://registry.example.com/acme/app:1", true},
		{"preloaded:cflinuxfs4", false},
	}
	for _, tt := range tests {
		t.Run(tt.rootfs, func(t *testing.T) {
			lrp := validLRP()
			lrp.RootFS = tt.rootfs
			lrp.Action = &Action{Run: &RunAction{Args: []string{"--verbose"}}}
			err := lrp.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "action.run.path") {
				t.Fatalf("error does not name action.run.path: %v", err)
			}
			task := validTask()
			task.RootFS = tt.rootfs
			task.Action = &Action{Serial: &SerialAction{Actions: []*Action{{Run: &RunAction{}}}}}
			if err := task.Validate(); tt.ok != (err == nil) {
				t.Fatalf("task Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if err := (&Action{Run: &RunAction{}}).Validate(); err == nil {
		t.Fatal("Action.Validate accepted a run action without a path")
	}
}

func TestRedactSecrets(t *testing.T) {
	lrp := validLRP()
	lrp.RootFS, lrp.ImageUsername, lrp.ImagePassword = "docker:///acme/app", "robot", "pw"
	r := lrp.RedactSecrets()
	if r.ImagePassword != "" || r.ImageUsername != "robot" || r == lrp {
		t.Fatalf("redacted = %+v", r)
	}
	if lrp.ImagePassword != "pw" {
		t.Fatal("RedactSecrets changed the original")
	}
	task := validTask()
	task.RootFS, task.ImageUsername, task.ImagePassword = "docker:///acme/app", "robot", "pw"
	if rt := task.RedactSecrets(); rt.ImagePassword != "" || task.ImagePassword != "pw" {
		t.Fatalf("task redaction: %+v / original %q", rt, task.ImagePassword)
	}
	var nilLRP *DesiredLRP
	if nilLRP.RedactSecrets() != nil {
		t.Fatal("nil LRP")
	}
}
