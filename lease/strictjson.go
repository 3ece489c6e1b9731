package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// errDuplicateMember reports a JSON object with two members of the same name
// (compared after unescaping), at any depth.
var errDuplicateMember = errors.New("duplicate member name")

// maxJSONDepth bounds nesting in strictly decoded JSON.
const maxJSONDepth = 32

// decodeStrict decodes exactly one JSON value from data (whitespace around it
// is allowed, anything else after it is not). Numbers stay json.Number.
// Invalid UTF-8, nesting deeper than maxJSONDepth and duplicate member names at
// any depth are refused; the latter with an error wrapping errDuplicateMember.
func decodeStrict(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := strictValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// strictValue reads one value from dec.
func strictValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("bad JSON: %w", err)
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errors.New("bad JSON: member name is not a string")
				}
				if _, dup := obj[key]; dup {
					return nil, fmt.Errorf("%w: %q", errDuplicateMember, key)
				}
				v, err := strictValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				obj[key] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("bad JSON: %w", err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := strictValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("bad JSON: %w", err)
			}
			return arr, nil
		}
		return nil, errors.New("bad JSON: unexpected delimiter")
	default:
		return t, nil
	}
}
