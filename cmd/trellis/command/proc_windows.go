package command

import (
	"os/exec"
	"syscall"

	"golang.org/x/sys/windows"
)

// ownProcessGroup starts cmd in a process group of its own, so a Ctrl-C in the console
// reaches only the parent.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}
