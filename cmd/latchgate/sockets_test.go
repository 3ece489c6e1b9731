package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A gate whose listen backlog is full (it stops accepting at its
// connection cap) is alive: a dial answers EAGAIN, not ECONNREFUSED. A
// second gate must not take its socket path as stale and unlink it.
func TestBusySocketNotReplaced(t *testing.T) {
	dir, err := os.MkdirTemp("", "lgbusy")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o700)
	path := filepath.Join(dir, "gate.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog: dials succeed until the kernel answers EAGAIN.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("filling the backlog: %v, want EAGAIN", err)
			}
			break
		}
		defer c.Close()
		if i > 64 {
			t.Fatal("backlog never filled")
		}
	}
	before, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenUnix(path, "")
	if err == nil {
		ln.Close()
		t.Fatalf("listenUnix(busy live socket) = nil error, want a refusal")
	}
	if !strings.Contains(err.Error(), "another gate") {
		t.Fatalf("listenUnix(busy live socket) = %v, want it to say another gate serves there", err)
	}
	after, err := os.Lstat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the live gate's socket was replaced (err %v)", err)
	}
}
