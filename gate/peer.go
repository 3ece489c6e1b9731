package gate

import (
	"context"
	"log"
	"net"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Peer is the identity of the process on the other end of a connection.
// On Unix sockets it comes from SO_PEERCRED; TCP peers have none.
type Peer struct {
	UID, GID, PID int64
	HasCreds      bool
	Listener      string // ListenerClient, ListenerAdmin or ListenerTCP
	Loopback      bool   // TCP peer on a loopback address
}

type peerKey struct{}

func withPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// peerFrom returns the connection's peer; the zero Peer has no credentials.
func peerFrom(ctx context.Context) Peer {
	p, _ := ctx.Value(peerKey{}).(Peer)
	return p
}

// peerOf reads the peer credentials of conn.
func peerOf(conn net.Conn, kind string) Peer {
	p := Peer{Listener: kind, UID: -1, GID: -1, PID: -1}
	switch c := conn.(type) {
	case *net.UnixConn:
		raw, err := c.SyscallConn()
		if err != nil {
			return p
		}
		var cred *unix.Ucred
		var cerr error
		if err := raw.Control(func(fd uintptr) {
			cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		}); err != nil || cerr != nil || cred == nil {
			return p
		}
		p.UID, p.GID, p.PID, p.HasCreds = int64(cred.Uid), int64(cred.Gid), int64(cred.Pid), true
	case *net.TCPConn:
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			p.Loopback = a.IP.IsLoopback()
		}
	}
	return p
}

// newStdLogger bridges net/http's ErrorLog to zerolog.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(stdWriter{l}, "", 0)
}

type stdWriter struct{ l zerolog.Logger }

func (w stdWriter) Write(b []byte) (int, error) {
	w.l.Warn().Str("component", "http").Msg(strings.TrimSpace(string(b)))
	return len(b), nil
}

// clean strips CR and LF from client-supplied strings before logging.
func clean(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// peerListener reads each connection's peer credentials at accept time and
// caps concurrent connections (a connection waits in the kernel backlog
// while the cap is reached).
type peerListener struct {
	net.Listener
	kind string
	sem  chan struct{}
}

func newPeerListener(ln net.Listener, kind string, maxConns int) *peerListener {
	return &peerListener{Listener: ln, kind: kind, sem: make(chan struct{}, maxConns)}
}

func (l *peerListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &peerConn{Conn: c, peer: peerOf(c, l.kind), release: func() { <-l.sem }}, nil
}

// peerConn is an accepted connection with its peer identity.
type peerConn struct {
	net.Conn
	peer    Peer
	once    sync.Once
	release func()
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// peerOfConn returns the identity recorded at accept.
func peerOfConn(c net.Conn, kind string) Peer {
	if pc, ok := c.(*peerConn); ok {
		return pc.peer
	}
	return Peer{Listener: kind, UID: -1, GID: -1, PID: -1}
}
