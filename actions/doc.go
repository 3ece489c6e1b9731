// Package actions owns the action catalogue and running actions: it loads and
// validates manifests (embedded defaults plus an optional override directory),
// compiles their JSON Schemas and templates once at load, turns a request's
// arguments into a Plan (I-JSON check, schema, request hash, target hosts),
// and executes a Plan through an executor (echo, http) with secrets injected
// at the transport and redacted from everything it returns.
//
// It must never read flags, environment variables or config files (secrets
// arrive through a SecretSource built by cmd/latchgate), never dial a host
// except through the egress Dialer handed to it, and never return a secret
// value in an Output, Summary or error.
//
// The API is internal to this module and may change; the manifest format is
// the stable, documented part (ARCHITECTURE.md "Action manifests").
package actions
