package actions

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// This file turns yaml.Node trees into typed values with errors that name
// the field, so a bad manifest is reported as "executor.timeout_seconds: must
// be an integer" rather than a decoder message.

type yamlEntry struct {
	key string
	val *yaml.Node
}

// fieldError is an error about one field, relative to the node being read.
type fieldError struct {
	field  string
	reason string
}

func (e *fieldError) Error() string { return e.field + ": " + e.reason }

func ferr(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, reason: fmt.Sprintf(format, args...)}
}

// joinField joins a parent field path and a child name.
func joinField(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

// mappingEntries returns the entries of a mapping node in document order,
// refusing duplicate and non-string keys.
func mappingEntries(n *yaml.Node, field string) ([]yamlEntry, error) {
	if n.Kind == yaml.AliasNode {
		return nil, ferr(field, "YAML aliases are not allowed")
	}
	if n.Kind != yaml.MappingNode {
		return nil, ferr(field, "must be a mapping")
	}
	seen := make(map[string]bool, len(n.Content)/2)
	out := make([]yamlEntry, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			return nil, ferr(field, "keys must be strings (line %d)", k.Line)
		}
		if k.Value == "<<" {
			return nil, ferr(field, "YAML merge keys are not allowed")
		}
		if seen[k.Value] {
			return nil, ferr(joinField(field, k.Value), "duplicate key")
		}
		if v.Kind == yaml.AliasNode {
			return nil, ferr(joinField(field, k.Value), "YAML aliases are not allowed")
		}
		seen[k.Value] = true
		out = append(out, yamlEntry{key: k.Value, val: v})
	}
	return out, nil
}

func yamlString(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", ferr(field, "must be a string")
	}
	return n.Value, nil
}

// yamlScalarString accepts any non-null scalar as text (for version: 1.0).
func yamlScalarString(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return "", ferr(field, "must be a string")
	}
	return n.Value, nil
}

func yamlStrings(n *yaml.Node, field string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, ferr(field, "must be a list of strings")
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		s, err := yamlString(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func yamlInt(n *yaml.Node, field string) (int64, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return 0, ferr(field, "must be an integer")
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil {
		return 0, ferr(field, "must be an integer that fits in 64 bits")
	}
	return v, nil
}

func yamlInts(n *yaml.Node, field string) ([]int64, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, ferr(field, "must be a list of integers")
	}
	out := make([]int64, 0, len(n.Content))
	for i, c := range n.Content {
		v, err := yamlInt(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func yamlBool(n *yaml.Node, field string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		return false, ferr(field, "must be true or false")
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, ferr(field, "must be true or false")
	}
	return b, nil
}

// yamlToJSON converts a YAML subtree into JSON-shaped Go values
// (map[string]any, []any, string, json.Number, bool, nil). Timestamps stay
// strings; aliases, merge keys, non-string keys, binary and custom tags, and
// non-finite numbers are refused.
func yamlToJSON(n *yaml.Node, field string, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, ferr(field, "nested deeper than %d", maxJSONDepth)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, ferr(field, "must hold one document")
		}
		return yamlToJSON(n.Content[0], field, depth)
	case yaml.AliasNode:
		return nil, ferr(field, "YAML aliases are not allowed")
	case yaml.MappingNode:
		entries, err := mappingEntries(n, field)
		if err != nil {
			return nil, err
		}
		m := make(map[string]any, len(entries))
		for _, e := range entries {
			v, err := yamlToJSON(e.val, joinField(field, e.key), depth+1)
			if err != nil {
				return nil, err
			}
			m[e.key] = v
		}
		return m, nil
	case yaml.SequenceNode:
		a := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := yamlToJSON(c, fmt.Sprintf("%s[%d]", field, i), depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str", "!!timestamp":
			return n.Value, nil
		case "!!null":
			return nil, nil
		case "!!bool":
			return yamlBool(n, field)
		case "!!int":
			v, err := yamlInt(n, field)
			if err != nil {
				return nil, err
			}
			return json.Number(strconv.FormatInt(v, 10)), nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, ferr(field, "must be a finite number")
			}
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
		}
		return nil, ferr(field, "unsupported YAML tag %s", n.ShortTag())
	}
	return nil, ferr(field, "unsupported YAML node")
}

// asFieldError extracts a fieldError.
func asFieldError(err error) (*fieldError, bool) {
	var fe *fieldError
	ok := errors.As(err, &fe)
	return fe, ok
}
