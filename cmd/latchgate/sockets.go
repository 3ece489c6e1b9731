package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func ownedByUs(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

func unixAccessW(dir string) bool {
	return unix.Access(dir, unix.W_OK) == nil
}

// lookupGroup returns the gid of a group name or number.
func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown group %q", name)
	}
	return strconv.Atoi(g.Gid)
}

// prepareSocketDir creates dir (and missing parents) with mode 0700, or
// 0750 with a group, and checks it is a real directory owned by us and not
// writable by others (PROTOCOL §1).
func prepareSocketDir(dir string, gid int) error {
	mode := os.FileMode(0o700)
	if gid >= 0 {
		mode = 0o750
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("socket directory %s is a symlink; refusing to use it", dir)
	case !fi.IsDir():
		return fmt.Errorf("socket directory %s is not a directory", dir)
	case !ownedByUs(fi):
		return fmt.Errorf("socket directory %s is owned by another user; refusing to use it", dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("socket directory %s is writable by others; fix it with chmod o-w", dir)
	}
	if gid >= 0 {
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("socket directory %s: chown to group: %w", dir, err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			return err
		}
	}
	return nil
}

// listenUnix binds path after the directory checks. A stale socket file
// (a dial is refused) is replaced; a live one is an error.
func listenUnix(path string, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	if err := prepareSocketDir(filepath.Dir(path), gid); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		// Only a refused dial proves nobody listens: a live gate whose
		// backlog is full answers EAGAIN, a slow one times out.
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			_ = c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("another gate is already serving on %s; stop it first or choose another --socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("chown %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}
