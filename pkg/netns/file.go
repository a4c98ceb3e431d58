package netns

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotNetns reports a file that is not a network namespace.
var ErrNotNetns = errors.New("not a network namespace")

// nsGetNSType is the NS_GET_NSTYPE ioctl, _IO(0xb7, 0x3), Linux 4.11+.
const nsGetNSType = 0xb703

// Open opens the network namespace at path (read-only, close-on-exec) and
// verifies that it is one. The caller closes the returned file.
func Open(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", path, err)
	}
	if err := Verify(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns: %s: %w", path, err)
	}
	return f, nil
}

// Verify returns nil when f refers to a network namespace, an error wrapping
// ErrNotNetns when it refers to something else (a regular file, another kind
// of namespace), or the system error when f cannot be inspected. It does not
// close f.
func Verify(f *os.File) error {
	if f == nil {
		return fmt.Errorf("nil file: %w", ErrNotNetns)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var verr error
	if err := rc.Control(func(fd uintptr) { verr = verifyFD(int(fd)) }); err != nil {
		return err
	}
	return verr
}

// VerifyFD is Verify for a raw descriptor the caller owns.
func VerifyFD(fd int) error { return verifyFD(fd) }

func verifyFD(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("fstatfs: %w", err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("filesystem type %#x: %w", st.Type, ErrNotNetns)
	}
	kind, err := unix.IoctlRetInt(fd, nsGetNSType)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			// Kernel older than 4.11: nsfs is all we can tell.
			return nil
		}
		return fmt.Errorf("NS_GET_NSTYPE: %w", err)
	}
	if kind != unix.CLONE_NEWNET {
		return fmt.Errorf("namespace type %#x: %w", kind, ErrNotNetns)
	}
	return nil
}

// Dup returns an independent close-on-exec duplicate of f. Both files must be
// closed by their owners.
func Dup(f *os.File) (*os.File, error) {
	if f == nil {
		return nil, errors.New("netns: dup of nil file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("netns: dup: %w", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// Same reports whether a and b refer to the same namespace (same nsfs inode).
func Same(a, b *os.File) (bool, error) {
	sa, err := a.Stat()
	if err != nil {
		return false, err
	}
	sb, err := b.Stat()
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}
