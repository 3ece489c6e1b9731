package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultSocketPaths lists the default client sockets in the order they are
// tried (PROTOCOL.md §1): /run/latchgate/gate.sock,
// $XDG_RUNTIME_DIR/latchgate/gate.sock, /tmp/latchgate-<uid>/gate.sock.
func defaultSocketPaths(getenv func(string) string, uid int) []string {
	paths := []string{"/run/latchgate/gate.sock"}
	if x := getenv("XDG_RUNTIME_DIR"); x != "" && filepath.IsAbs(x) {
		paths = append(paths, filepath.Join(x, "latchgate", "gate.sock"))
	}
	return append(paths, fmt.Sprintf("/tmp/latchgate-%d/gate.sock", uid))
}

// pickDefaultSocket returns the first default socket that exists, after
// checking that it is safe to use. An unsafe candidate is an error, never
// skipped: falling through to the next one would let whoever planted it choose
// which gate the agent talks to.
func pickDefaultSocket(paths []string, uid int) (string, error) {
	for i, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		// The first candidate (/run/latchgate) belongs to whichever user the
		// gate runs as; the others live in places anyone may create (/tmp) or
		// that the environment names, so they must be ours or root's.
		if err := checkSocketPath(p, uid, i > 0); err != nil {
			return "", err
		}
		return p, nil
	}
	return "", fmt.Errorf("no gate socket at %s", strings.Join(paths, ", "))
}
