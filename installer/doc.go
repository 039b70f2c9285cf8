// Package installer builds the cell's installers: the systemd unit and .deb packages on Linux
// and the MSI on Windows.
package installer
