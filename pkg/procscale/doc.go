// Package procscale sizes GOMAXPROCS to the CPU a proxy process uses.
//
// A Go program with more than one P wakes an idle thread whenever work
// becomes runnable, and that thread spins looking for more before it parks
// again. A proxy at light load pays this on every request. On a virtual
// machine each sleep and wake-up of a thread costs tens of microseconds of
// CPU, so at light load it is a third of a proxy's CPU time. With one P a
// goroutine hand-off is a plain switch on the same thread, as in an event
// loop.
//
// A Scaler runs the process with one P while it uses less than one CPU, and
// with the runtime's default (the CPUs it may use, or its cgroup's CPU
// limit) once it needs more: it samples the process's CPU time, goes up at
// once when one P is nearly busy, and comes down after a spell of low use.
// A configured value (Config.Fixed, the proxies' --concurrency) or a
// positive GOMAXPROCS environment variable pins GOMAXPROCS instead. While
// the process runs on one P the runtime's own GOMAXPROCS updates (Go 1.25+
// follows the cgroup CPU limit) are off; scaling up turns them on again.
package procscale
