//go:build !unix

package sdk

import "fmt"

// checkSocketPath: Unix sockets are not used on this platform; refuse.
func checkSocketPath(sock string, _ int, _ bool) error {
	return fmt.Errorf("%w: unix sockets are not supported here (%s); use a base URL", ErrUnsafeSocket, sock)
}
