package containerinit

import (
	"fmt"
	"runtime"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/trellis-run/trellis/isolation"
)

// seccomp_data offsets (linux/seccomp.h); args are 64-bit, and on the little-endian
// architectures supported here the low word of args[i] is at 16+8i.
const (
	seccompDataNr   = 0
	seccompDataArch = 4
	seccompDataArgs = 16
)

const (
	auditArchX86_64  = 0xc000003e
	auditArchAARCH64 = 0xc00000b7
	// x32SyscallBit marks x32 ABI syscalls on x86_64; they are denied so that none of the
	// filtered calls can be reached through the x32 numbers.
	x32SyscallBit = 0x40000000
)

// nativeArch returns the seccomp and audit architecture of the running binary.
func nativeArch() (specs.Arch, uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return specs.ArchX86_64, auditArchX86_64, nil
	case "arm64":
		return specs.ArchAARCH64, auditArchAARCH64, nil
	}
	return "", 0, fmt.Errorf("%w: seccomp filter for %s", isolation.ErrUnsupported, runtime.GOARCH)
}

// CompileSeccomp turns the OCI seccomp section into a classic BPF program for the native
// architecture. It supports what BuildSpec emits: a default action of ALLOW, ERRNO or KILL
// rules, and arguments compared with SCMP_CMP_EQ or SCMP_CMP_MASKED_EQ on their low 32 bits.
// A syscall name unknown on this architecture is skipped (it cannot be called either); a
// foreign architecture's calls (e.g. i386 through int 0x80) fail with EPERM.
func CompileSeccomp(sc *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	_, audit, err := nativeArch()
	if err != nil {
		return nil, err
	}
	defAction, err := seccompAction(sc.DefaultAction, sc.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jgeK  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		andK  = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
		retK  = unix.BPF_RET | unix.BPF_K
	)
	eperm := uint32(unix.SECCOMP_RET_ERRNO | unix.EPERM)
	prog := []unix.SockFilter{
		stmt(ldAbs, seccompDataArch),
		jump(jeqK, audit, 1, 0),
		stmt(retK, eperm),
		stmt(ldAbs, seccompDataNr),
	}
	if runtime.GOARCH == "amd64" {
		prog = append(prog, jump(jgeK, x32SyscallBit, 0, 1), stmt(retK, eperm))
	}
	for _, rule := range sc.Syscalls {
		action, err := seccompAction(rule.Action, rule.ErrnoRet)
		if err != nil {
			return nil, err
		}
		for _, name := range rule.Names {
			nr, ok := syscallNumbers[name]
			if !ok {
				continue
			}
			if len(rule.Args) == 0 {
				prog = append(prog, jump(jeqK, uint32(nr), 0, 1), stmt(retK, action))
				continue
			}
			// if nr matches and every argument condition holds, return action; the
			// accumulator is reloaded with nr afterwards either way.
			var body []unix.SockFilter
			for _, a := range rule.Args {
				if a.Index > 5 || a.Value>>32 != 0 || a.ValueTwo>>32 != 0 {
					return nil, fmt.Errorf("%w: seccomp rule for %s: only 32-bit comparisons of args 0-5 are supported", isolation.ErrUnsupported, name)
				}
				body = append(body, stmt(ldAbs, seccompDataArgs+8*uint32(a.Index)))
				switch a.Op {
				case specs.OpMaskedEqual:
					body = append(body, stmt(andK, uint32(a.Value)), jump(jeqK, uint32(a.ValueTwo), 0, 0))
				case specs.OpEqualTo:
					body = append(body, jump(jeqK, uint32(a.Value), 0, 0))
				default:
					return nil, fmt.Errorf("%w: seccomp operator %s", isolation.ErrUnsupported, a.Op)
				}
			}
			body = append(body, stmt(retK, action))
			// Each conditional jump skips, on mismatch, to the reload after the return.
			for i := range body {
				if body[i].Code == jeqK {
					body[i].Jf = uint8(len(body) - 1 - i)
				}
			}
			if len(body) > 250 {
				return nil, fmt.Errorf("%w: seccomp rule for %s is too long", isolation.ErrUnsupported, name)
			}
			prog = append(prog, jump(jeqK, uint32(nr), 0, uint8(len(body))))
			prog = append(prog, body...)
			prog = append(prog, stmt(ldAbs, seccompDataNr))
		}
	}
	prog = append(prog, stmt(retK, defAction))
	if len(prog) > 4096 {
		return nil, fmt.Errorf("%w: seccomp program of %d instructions exceeds the kernel's 4096", isolation.ErrUnsupported, len(prog))
	}
	return prog, nil
}

func seccompAction(a specs.LinuxSeccompAction, errno *uint) (uint32, error) {
	switch a {
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActErrno:
		e := uint32(unix.EPERM)
		if errno != nil {
			e = uint32(*errno)
		}
		return unix.SECCOMP_RET_ERRNO | (e & unix.SECCOMP_RET_DATA), nil
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	}
	return 0, fmt.Errorf("%w: seccomp action %s", isolation.ErrUnsupported, a)
}

// loadSeccomp installs prog on the calling thread only. The caller must have set
// no_new_privs (or hold CAP_SYS_ADMIN) and be locked to its OS thread.
func loadSeccomp(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		return fmt.Errorf("installing seccomp filter: %w", err)
	}
	runtime.KeepAlive(prog)
	return nil
}
