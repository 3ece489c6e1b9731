// Package sdk is the Go client for a LatchGate gate (PROTOCOL.md §2–§5).
//
// It owns the agent side of the protocol: finding the gate (base URL,
// LATCHGATE_URL, socket, default sockets), an ephemeral P-256 DPoP key per
// lease, leases and their renewal (coalesced across goroutines), one fresh
// proof per request (htm, htu, iat, jti, ath, bh), the retries that are safe,
// the mapping of answers to errors (§4), and offline verification of receipts
// (§5).
//
// It must never import the gate's own packages (gate, policy, store, egress,
// lease, receipts, cmd), never expose a third-party type, never retry a 502 or
// an execute that has no Idempotency-Key, never use a default socket whose
// directory is a symlink or writable by others, and never log a lease, a proof
// or action arguments.
//
// Stability: the exported API is the published Go SDK and changes only in
// backward-compatible ways within v1.
package sdk
