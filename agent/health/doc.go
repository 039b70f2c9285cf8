// Package health runs the health checks of an LRP instance (bbs/models.CheckDefinition):
// tcp{port} passes when a TCP connection to the port opens within the check's timeout;
// http{port, path} passes when GET path on the port answers 200 within it.
//
// A Checker probes a container's ports at the addresses its Config.Resolve function gives
// (the host IP and mapped port, or the container IP and the port itself). It has two phases,
// as in Diego:
//
//   - WaitHealthy (startup) polls every check, quickly (Config.StartupInterval, or the check's
//     interval_ms when shorter), until each has passed once — then the instance may be
//     reported RUNNING — or until the start timeout passes.
//   - Monitor (liveness) then polls each check every interval_ms (Config.Interval when unset)
//     and returns when one has failed Config.FailureThreshold times in a row (default 1, as
//     Diego fails an instance on its first failed liveness check).
//
// Failures are *Failure errors whose text (and Reason) starts with "health check failed", for
// crash reports. Every liveness failure is written as a line to Config.Sink's stderr; during
// startup, where failures are expected while the process boots, a check's failure is written
// when its message differs from the check's previous one, and the last is always written
// when the start timeout passes.
package health
