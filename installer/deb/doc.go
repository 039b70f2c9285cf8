// Package deb builds trellis's Debian packages with nfpm, as a library, so that no packaging
// tool needs installing.
//
// Three packages are built, because two of them must be installable side by side on a small
// cluster's machine and dpkg refuses two packages owning one file:
//
//   - trellis: the binary /usr/bin/trellis;
//   - trellis-agent: the cell agent's systemd unit and its default configuration
//     /etc/trellis/agent.yaml (a conffile); depends on trellis of the same version and on
//     what the Linux backend runs (containernetworking-plugins, iptables);
//   - trellis-server: the BBS and the brain as two units, trellis-bbs and trellis-brain, each
//     reading its flags from /etc/trellis/{bbs,brain}.env (conffiles); depends on trellis.
//
// The maintainer scripts enable the units (systemctl enable works without a running systemd,
// so images built in a chroot come up enabled), restart running services after an upgrade
// when systemd runs, stop the services before removal (for the agent a stop is a drain:
// its work is evacuated first) and, on purge, delete the configuration and the state under
// /var/lib/trellis.
//
// This package imports nfpm and its large module graph; only the packaging program
// (installer/cmd/trellis-packages) links it, never the trellis binary.
package deb
