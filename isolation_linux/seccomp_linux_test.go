package isolationlinux

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation_linux/containerinit"
)

func TestCompileSeccomp(t *testing.T) {
	prog, err := containerinit.CompileSeccomp(defaultSeccomp())
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) < len(DeniedSyscalls)*2 || prog[len(prog)-1].K != unix.SECCOMP_RET_ALLOW {
		t.Fatalf("program of %d instructions ending in %#x", len(prog), prog[len(prog)-1].K)
	}
	// Every jump stays inside the program.
	for i, ins := range prog {
		if ins.Code&0x07 == unix.BPF_JMP && (i+1+int(ins.Jt) >= len(prog) || i+1+int(ins.Jf) >= len(prog)) {
			t.Fatalf("instruction %d jumps out of the program", i)
		}
	}
}
