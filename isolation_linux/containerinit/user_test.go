package containerinit

import (
	"strings"
	"testing"

	"github.com/trellis-run/trellis/isolation"
)

func TestResolveUser(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\n"
	group := "root:x:0:\nvcap:x:2000:\nstaff:x:50:vcap\n"
	tests := []struct {
		spec string
		want ExecUser
		err  bool
	}{
		{"", ExecUser{UID: 0, GID: 0, Name: "root", Home: "/root"}, false},
		{"vcap", ExecUser{UID: 2000, GID: 2000, Name: "vcap", Home: "/home/vcap", Groups: []uint32{50}}, false},
		{"2000:50", ExecUser{UID: 2000, GID: 50, Name: "vcap", Home: "/home/vcap"}, false},
		{"vcap:staff", ExecUser{UID: 2000, GID: 50, Name: "vcap", Home: "/home/vcap"}, false},
		{"1234", ExecUser{UID: 1234, GID: 1234, Home: "/"}, false},
		{"nobody", ExecUser{}, true},
		{"vcap:nogroup", ExecUser{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ResolveUser(tt.spec, strings.NewReader(passwd), strings.NewReader(group))
			if tt.err {
				if !isolation.IsInvalidSpec(err) {
					t.Fatalf("err = %v, want ErrInvalidSpec", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.UID != tt.want.UID || got.GID != tt.want.GID || got.Name != tt.want.Name || got.Home != tt.want.Home || len(got.Groups) != len(tt.want.Groups) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
