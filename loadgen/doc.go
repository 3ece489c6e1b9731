// Package loadgen is LatchGate's load generator behind `latchgate bench`:
// it opens agents (each its own P-256 key and lease), drives `echo`
// executes against a gate's client socket at full speed or a fixed rate,
// and measures the floor (one ES256 proof verification, one Ed25519 receipt
// signature, one policy evaluation) in-process with the gate's own packages.
//
// loadgen must never weaken or bypass a gate check: it is an ordinary
// client. It only measures; tests never assert its timings. Its API is
// internal to the project and not stable.
package loadgen
