//go:build unix

package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// checkSocketPath refuses a socket whose directory is a symlink, not a
// directory, or writable by others (and, with checkOwner, owned by anyone but
// uid or root), or that is not itself a socket.
func checkSocketPath(sock string, uid int, checkOwner bool) error {
	dir := filepath.Dir(sock)
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnsafeSocket, dir, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%w: directory %s is a symlink", ErrUnsafeSocket, dir)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafeSocket, dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("%w: directory %s is writable by others", ErrUnsafeSocket, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && checkOwner && int(st.Uid) != uid && st.Uid != 0 {
		return fmt.Errorf("%w: directory %s is owned by uid %d", ErrUnsafeSocket, dir, st.Uid)
	}
	sfi, err := os.Lstat(sock)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnsafeSocket, sock, err)
	}
	if sfi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%w: %s is not a socket", ErrUnsafeSocket, sock)
	}
	return nil
}
