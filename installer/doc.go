// Package installer installs and controls the trellis cell agent as a system service, and
// writes its configuration.
//
// ServiceCommands returns the cobra commands the CLI attaches under `trellis agent`:
//
//	trellis agent configure --cell-id c1 --bbs-url https://bbs:8889 --zone z1 --tags gpu \
//	    --rootfs preloaded:cflinuxfs4=/var/lib/trellis/rootfs/cflinuxfs4 --rootfs docker
//	trellis agent install      # systemd unit or Windows service, enabled at boot
//	trellis agent start | stop | status
//	trellis agent uninstall    # stops (a drain) and removes the service
//	trellis agent purge        # deletes the configuration and the agent's data
//
// On Linux the service is our own systemd unit (package installer/systemd), written and
// enabled by our code because kardianos/service falls back to System V init wherever
// systemd is not PID 1 and its unit template lacks what the agent needs (KillMode=process,
// Delegate=yes, a stop timeout covering a drain). On Windows, and on Unix without
// systemctl, kardianos/service registers the service, with restart-on-failure recovery
// actions on Windows.
//
// Configure merges the flags it is given into the YAML file (an empty flag keeps what the
// file says), validates the result with agent.LoadConfig and only then replaces the file, so
// a bad flag never leaves a cell with a broken configuration. The Windows MSI runs the same
// command as a custom action.
//
// RunService runs the agent under the Windows service control manager; `trellis agent run
// --service` must call it, since kardianos/service cannot tell it runs as a service under
// wine. A stop request from the service manager calls Program.Stop (for the agent: a drain)
// and reports progress until Program.Run returns.
//
// Paths: DefaultConfigPath is /etc/trellis/agent.yaml, or %ProgramData%\trellis\agent.yaml on
// Windows.
package installer
