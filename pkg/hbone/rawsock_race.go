//go:build race

package hbone

// raceBuild is set under the race detector: raw I/O then goes through the
// syscall package, whose reads and writes tell the detector that data
// passed through a descriptor (happens-before between the writer and the
// reader). Raw calls would hide that, and goroutines that talk over
// sockets would be reported as racing.
const raceBuild = true
