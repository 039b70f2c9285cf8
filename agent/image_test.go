package agent

import (
	"errors"
	"reflect"
	"testing"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/isolation"
)

func env(kv ...string) []models.EnvironmentVariable {
	var out []models.EnvironmentVariable
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, models.EnvironmentVariable{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestApplyImage(t *testing.T) {
	img := &isolation.ImageConfig{
		Entrypoint: []string{"/bin/httpd", "-f"}, Cmd: []string{"-p", "8080"},
		Env:        []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PORT=1"},
		WorkingDir: "/www", User: "www-data", ExposedPorts: []uint32{8080, 9090},
	}
	workEnv := env("PORT", "8080")
	tests := []struct {
		name string
		run  models.RunAction
		img  *isolation.ImageConfig
		want models.RunAction
		err  error
	}{
		{"entrypoint and cmd", models.RunAction{}, img, models.RunAction{
			Path: "/bin/httpd", Args: []string{"-f", "-p", "8080"}, Dir: "/www", User: "www-data",
			Env: env("PATH", "/usr/bin:/bin", "LANG", "C.UTF-8")}, nil},
		{"args replace cmd", models.RunAction{Args: []string{"-p", "9090"}}, img, models.RunAction{
			Path: "/bin/httpd", Args: []string{"-f", "-p", "9090"}, Dir: "/www", User: "www-data",
			Env: env("PATH", "/usr/bin:/bin", "LANG", "C.UTF-8")}, nil},
		{"path overrides the entrypoint; the run's own settings win", models.RunAction{
			Path: "/bin/sh", Args: []string{"-c", "true"}, Dir: "/tmp", User: "root", Env: env("LANG", "en_US")}, img,
			models.RunAction{Path: "/bin/sh", Args: []string{"-c", "true"}, Dir: "/tmp", User: "root",
				Env: env("PATH", "/usr/bin:/bin", "LANG", "en_US")}, nil},
		{"cmd without entrypoint", models.RunAction{}, &isolation.ImageConfig{Cmd: []string{"/bin/sleep", "60"}},
			models.RunAction{Path: "/bin/sleep", Args: []string{"60"}}, nil},
		{"no command anywhere", models.RunAction{}, &isolation.ImageConfig{WorkingDir: "/"}, models.RunAction{}, errNoImageCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &models.Action{Serial: &models.SerialAction{Actions: []*models.Action{
				{Download: &models.DownloadAction{From: "http://x/y.tgz", To: "/tmp"}},
				{Timeout: &models.TimeoutAction{TimeoutMs: 1000, Action: &models.Action{Run: &tt.run}}},
			}}}
			before := tt.run
			got, err := applyImage(a, tt.img, workEnv)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if r := got.Serial.Actions[1].Timeout.Action.Run; !reflect.DeepEqual(*r, tt.want) {
				t.Fatalf("run = %+v\nwant  %+v", *r, tt.want)
			}
			if got.Serial.Actions[0].Download == nil || !reflect.DeepEqual(*a.Serial.Actions[1].Timeout.Action.Run, before) {
				t.Fatal("applyImage changed the original action or lost a sibling")
			}
		})
	}
}

func TestWithImageLRP(t *testing.T) {
	img := &isolation.ImageConfig{Cmd: []string{"/bin/app"}, ExposedPorts: []uint32{8080, 9090}}
	d := &models.DesiredLRP{ProcessGuid: "p", Action: &models.Action{Run: &models.RunAction{}}}
	got, err := withImageLRP(d, img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action.Run.Path != "/bin/app" || d.Action.Run.Path != "" {
		t.Fatalf("action %+v (original %+v)", got.Action.Run, d.Action.Run)
	}
	if cd := got.CheckDefinition; cd == nil || len(cd.Checks) != 1 || cd.Checks[0].TCP == nil || cd.Checks[0].TCP.Port != 8080 {
		t.Fatalf("default health check %+v, want tcp 8080", got.CheckDefinition)
	}
	own := &models.CheckDefinition{Checks: []models.Check{{HTTP: &models.HTTPCheck{Port: 9090, Path: "/"}}}}
	d.CheckDefinition = own
	if got, _ := withImageLRP(d, img); got.CheckDefinition != own {
		t.Fatal("the LRP's own health check was replaced")
	}
	if got, _ := withImageLRP(d, nil); got != d {
		t.Fatal("without an image the LRP must come back unchanged")
	}
	if _, err := withImageLRP(&models.DesiredLRP{Action: &models.Action{Run: &models.RunAction{}}}, &isolation.ImageConfig{}); !errors.Is(err, errNoImageCommand) {
		t.Fatalf("no command: %v", err)
	}
}
