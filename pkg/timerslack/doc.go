// Package timerslack gives every thread of a Go process the same Linux timer
// slack, the runtime's own threads included.
//
// Timer slack is how late the kernel may fire a thread's timers so that it
// can serve several with one wake-up. The Go runtime's monitor thread
// (sysmon) polls every 20 µs while any goroutine runs, and is woken again
// by the first system call after each idle spell. On a proxy that serves
// short bursts, and on virtual machines where a sleep and wake-up costs tens
// of microseconds of CPU, those polls are a sizeable share of the process's
// CPU time. A larger slack lets the kernel stretch them.
//
// A thread starts with the slack of the thread that created it, and the
// runtime creates sysmon before any Go code of the program runs, so the only
// way to reach it is to set the slack on the current thread and exec the
// program again: the slack survives execve, and every thread of the new
// image inherits it.
package timerslack
