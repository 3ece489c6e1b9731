package actions

import (
	"errors"
	"fmt"
)

// ErrUnknownExecutor is returned by NewRunner/Execute for a manifest whose
// executor kind has no registered executor.
var ErrUnknownExecutor = errors.New("actions: unknown executor kind")

// ManifestError reports a manifest that failed to load. Field is a dotted
// path into the manifest ("executor.url", "egress.allowed_domains[2]"), or ""
// when the whole file is at fault.
type ManifestError struct {
	File   string
	Field  string
	Reason string
	Err    error // underlying cause, if any
}

func (e *ManifestError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("manifest %s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("manifest %s: %s: %s", e.File, e.Field, e.Reason)
}

func (e *ManifestError) Unwrap() error { return e.Err }

// InvalidJSONError reports arguments that are not I-JSON (RFC 7493); the gate
// answers 400 invalid_json. Reason never quotes the input.
type InvalidJSONError struct {
	Offset int64 // byte offset of the problem in the input
	Reason string
}

func (e *InvalidJSONError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Reason)
}

// SchemaError reports arguments that violate the action's input schema; the
// gate answers 422 schema_violation with deny_reason = Error(). Pointer is the
// RFC 6901 pointer of the failing value ("" is the whole document). Reason
// never quotes argument values.
type SchemaError struct {
	Pointer string
	Reason  string
}

func (e *SchemaError) Error() string {
	p := e.Pointer
	if p == "" {
		p = "(root)"
	}
	return p + ": " + e.Reason
}

// TemplateError reports arguments that cannot fill the action's templates
// (a missing argument, a value of the wrong type for its place, CR/LF/NUL in a
// header); the gate answers 422 schema_violation with deny_reason = Error().
// It never quotes argument values.
type TemplateError struct {
	Field  string // where in the manifest: "executor.url", "executor.headers.Authorization", "executor.body/title"
	Reason string
}

func (e *TemplateError) Error() string {
	return e.Field + ": " + e.Reason
}
