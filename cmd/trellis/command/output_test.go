package command

import (
	"bytes"
	"testing"
	"time"
)

func TestTableAlignsAndDashesEmptyCells(t *testing.T) {
	var buf bytes.Buffer
	tb := newTable(&buf, "GUID", "STATE")
	tb.row("web", "")
	tb.row("a-much-longer-guid", "RUNNING")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	want := "GUID                STATE\nweb                 -\na-much-longer-guid  RUNNING\n"
	if buf.String() != want {
		t.Fatalf("table =\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	cases := []struct {
		at   time.Time
		want string
	}{
		{now.Add(-5 * time.Second), "5s"},
		{now.Add(-3*time.Minute - 12*time.Second), "3m12s"},
		{now.Add(-5*time.Hour - 7*time.Minute - 3*time.Second), "5h7m0s"},
		{now.Add(-72 * time.Hour), "3d"},
		{now.Add(time.Second), "0s"},
	}
	for _, c := range cases {
		if got := age(c.at.UnixNano(), now); got != c.want {
			t.Errorf("age(%v) = %q, want %q", now.Sub(c.at), got, c.want)
		}
	}
	if got := age(0, now); got != "" {
		t.Errorf("age(0) = %q, want empty", got)
	}
}
