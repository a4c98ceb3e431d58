// Package timerslack gives every thread of a Go process the same Linux timer
// slack, the runtime's own threads included.
//
// Timer slack is how late the kernel may fire a thread's timers so that it
// can serve several with one wake-up. The Go runtime's monitor thread
// (sysmon) sleeps while the process is idle; the first system call after an
// idle spell wakes it, and it then polls every 20 µs until it has found
// nothing to do for about a millisecond. A proxy that serves short bursts
// pays that at every burst, and on virtual machines, where a sleep and
// wake-up costs tens of microseconds of CPU, those polls are a sizeable
// share of its CPU time. A larger slack lets the kernel stretch them. It
// stretches every timer of the process the same way: Go timers, and the
// runtime's own short sleeps (a thread stealing work, sysmon taking back a
// P from a long system call) may end up to the slack late.
//
// A thread starts with the slack of the thread that created it, and the
// runtime creates sysmon before any Go code of the program runs, so the only
// way to reach it is to set the slack on the current thread and exec the
// program again: the slack survives execve, and every thread of the new
// image inherits it.
package timerslack
