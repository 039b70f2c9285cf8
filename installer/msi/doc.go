// Package msi builds the Windows cell's MSI with wixl (Debian's msitools) from a WiX source
// rendered from trellis-agent.wxs.tmpl, and signs it and trellis.exe with osslsigncode.
//
// The MSI installs trellis.exe into Program Files\trellis, registers the trellis-agent service
// (started at install, stopped — which drains the cell — and removed at uninstall) and writes
// %ProgramData%\trellis\agent.yaml from public properties by running the installed
// `trellis.exe agent configure` as a deferred custom action, since wixl has no util:XmlFile:
//
//	msiexec /i trellis-agent.msi /qn BBS_URL=https://bbs:8889 CELL_ID=win-1 ZONE=z1 ^
//	  PLACEMENT_TAGS=gpu,ssd ROOTFS_PROVIDERS=preloaded:windows2022=C:\rootfs\2022,docker ^
//	  CA_FILE=C:\trellis\ca.crt CERT_FILE=C:\trellis\cell.crt KEY_FILE=C:\trellis\cell.key
//
// Configure runs only when at least one property is given or on an upgrade, and an empty
// property keeps what the file already says, so an upgrade without properties keeps the
// configuration (configure then only checks it). wixl has no ServiceConfig either, so
// `trellis.exe agent recovery` sets the restart-on-failure actions. Before the installer's
// StopServices, which waits only 30 seconds, the installed trellis.exe runs `agent stop`,
// which waits for the drain however long it takes. An uninstall keeps the configuration and
// the agent's data under %ProgramData%\trellis unless given PURGE=1, when it runs
// `trellis.exe agent purge`. The removal half of an upgrade never purges: Windows Installer
// runs it with UPGRADINGPRODUCTCODE, and wine's msiexec as a plain uninstall without PURGE.
//
// The service runs `trellis.exe agent run --service --config <file>`: --service makes the
// agent talk to the service control manager without asking Windows whether it is a service,
// which wine answers wrongly (see docs/install.md).
package msi
