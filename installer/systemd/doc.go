// Package systemd renders trellis's systemd units and installs them without relying on systemd
// running as PID 1.
//
// The units are ours, not a service library's generic template: the agent's unit uses
// KillMode=process so that containers outlive an agent restart (DESIGN §5), Delegate=yes so the
// agent owns its cgroup subtree, and a TimeoutStopSec long enough for a drain, since stopping the
// agent evacuates the cell. AgentUnit, BBSUnit and BrainUnit describe the three services;
// Unit.Render writes one as a unit file.
//
// Installer writes a unit into a unit directory and runs `systemctl enable`, which works
// offline (in a chroot, an image build or a container without systemd); daemon-reload and the
// start/stop/status verbs need a running systemd and report ErrNotRunning otherwise.
package systemd
