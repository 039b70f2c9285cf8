// Package mixedfleet is the end-to-end test of a mixed Windows and Linux fleet, with the
// Windows side under wine: a BBS and a brain in the test process, a Linux cell (the real
// trellis binary on the Linux backend with a busybox stack) and a Windows cell (trellis.exe
// agent run under wine, process mode), each with its own certificate from a dev PKI. A
// Windows LRP (the hello-app droplet built for Windows) and a Linux LRP (busybox httpd) land
// on their own cells and answer on their ports, and the operator CLI shows both cells and
// both LRPs. A second test installs the Windows cell's MSI under wine (configure, service
// start and registration, upgrade keeping the configuration, uninstall).
//
// The tests need wine set up as hack/wine-test.sh does (it runs them after the
// isolation_windows tests, with TRELLIS_WINE=1 and WINEPREFIX set); under plain go test they
// skip and say so. The Linux cell needs root.
package mixedfleet
