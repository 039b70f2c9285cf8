// Package isolationwindows is the Windows isolation backend: each container is either a set
// of host processes in a job object ("process" mode) or a Windows Server container through
// HCS ("container" mode). Config.Stacks maps every preloaded stack to its mode; a RootFS
// naming another stack or scheme is isolation.ErrUnsupported, and so is any request a mode
// cannot honour (see docs/isolation-windows.md for the table).
//
// One Backend serves both modes: validation, the state dir (JSON records that a new Backend
// reads back, so Lookup, List and Attach survive an agent restart), host-port allocation,
// properties, per-process log files and tar streaming are shared; a small driver per mode
// makes the isolation and runs processes. Process mode (job_windows.go) creates each process
// suspended, assigns it to the container's named job object (memory limit, CPU rate hard
// cap, active-process limit, kill-on-close), then resumes it; container mode (hcsdriver.go)
// talks to HCS and HNS through the hcsAPI and hnsAPI interfaces, implemented over hcsshim
// on Windows (hcs_windows.go) and by hcsFake, which the tests use on every system. The
// documents sent to HCS and HNS are built by untagged functions (hcsdoc.go) pinned by golden
// files in testdata (go test -update rewrites them).
//
// Use:
//
//	cfg := isolationwindows.DefaultConfig()
//	cfg.Stacks["windows2016"] = isolationwindows.StackConfig{Mode: isolationwindows.ModeProcess}
//	b, err := isolationwindows.New(ctx, cfg, logger)
//	c, err := b.Create(ctx, isolation.ContainerSpec{Handle: "h", RootFS: "preloaded:windows2016"})
//	p, err := c.Run(ctx, isolation.ProcessSpec{Path: "/app/web.exe"}, isolation.ProcessIO{})
//
// On other systems New succeeds but Create fails with an error wrapping
// errors.ErrUnsupported. hack/wine-test.sh runs the Windows tests under wine.
package isolationwindows
