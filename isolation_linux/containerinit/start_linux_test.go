package containerinit

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestSeccompEncoding(t *testing.T) {
	prog, err := CompileSeccomp(&specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mount", "reboot"}, Action: specs.ActErrno}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSeccomp(EncodeSeccomp(prog))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, prog) {
		t.Fatalf("decode(encode(p)) = %v, want %v", got, prog)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"empty", nil, true},
		{"one instruction", EncodeSeccomp([]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}), true},
		{"partial instruction", make([]byte, 12), false},
		{"too long", make([]byte, 8*0x10000), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeSeccomp(tc.in); (err == nil) != tc.ok {
				t.Fatalf("decodeSeccomp(%d bytes) = %v, want ok %v", len(tc.in), err, tc.ok)
			}
		})
	}
}
