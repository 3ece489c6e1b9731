package actions

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SecretSource resolves secret names at dispatch. cmd/latchgate builds one
// with NewSecretSource; actions never reads the environment itself.
type SecretSource interface {
	Secret(name string) (string, bool)
}

// MinSecretLen is the shortest secret accepted (shorter ones are refused:
// redacting them would mangle ordinary output).
const MinSecretLen = 8

// SecretEnvPrefix prefixes secret environment variables.
const SecretEnvPrefix = "LATCHGATE_SECRET_"

// ErrSecretTooShort reports a secret shorter than MinSecretLen bytes.
var ErrSecretTooShort = errors.New("actions: secret shorter than 8 bytes")

// ErrSecretsFileMode reports a secrets file readable or writable by others.
var ErrSecretsFileMode = errors.New("actions: secrets file must be a regular file with mode 0600")

type staticSecrets map[string]string

func (s staticSecrets) Secret(name string) (string, bool) {
	v, ok := s[name]
	return v, ok
}

// NewSecretSource builds the secret source from environment variables
// LATCHGATE_SECRET_<NAME> (env is the process environment as a map; other
// variables are ignored) and an optional YAML file (a map NAME: value; must
// be a regular file, mode 0600 or stricter). The environment wins. Every
// value must be at least MinSecretLen bytes; errors name the secret, never
// its value.
func NewSecretSource(env map[string]string, file string) (SecretSource, error) {
	out := staticSecrets{}
	if file != "" {
		fromFile, err := readSecretsFile(file)
		if err != nil {
			return nil, err
		}
		for k, v := range fromFile {
			out[k] = v
		}
	}
	for k, v := range env {
		name, ok := strings.CutPrefix(k, SecretEnvPrefix)
		if !ok {
			continue
		}
		if !secretNameRE.MatchString(name) {
			return nil, fmt.Errorf("actions: environment variable %s%s: secret name must match %s", SecretEnvPrefix, name, secretNameRE)
		}
		out[name] = v
	}
	names := make([]string, 0, len(out))
	for k := range out {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if len(out[k]) < MinSecretLen {
			return nil, fmt.Errorf("%w: %s", ErrSecretTooShort, k)
		}
	}
	return out, nil
}

func readSecretsFile(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("actions: secrets file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("actions: secrets file: %w", err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w (%s is %v)", ErrSecretsFileMode, file, info.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("actions: secrets file: %w", err)
	}
	if len(data) > maxManifestBytes {
		return nil, errors.New("actions: secrets file larger than 1 MiB")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// yaml errors may quote the offending line: do not pass them on.
		return nil, fmt.Errorf("actions: secrets file %s is not valid YAML", file)
	}
	out := map[string]string{}
	if doc.Kind == 0 {
		return out, nil
	}
	if len(doc.Content) != 1 {
		return nil, fmt.Errorf("actions: secrets file %s must be a YAML map NAME: value", file)
	}
	entries, err := mappingEntries(doc.Content[0], "")
	if err != nil {
		return nil, fmt.Errorf("actions: secrets file %s must be a YAML map NAME: value without duplicates", file)
	}
	for _, e := range entries {
		if !secretNameRE.MatchString(e.key) {
			return nil, fmt.Errorf("actions: secrets file %s: secret name %q must match %s", file, e.key, secretNameRE)
		}
		v, err := yamlScalarString(e.val, e.key)
		if err != nil {
			return nil, fmt.Errorf("actions: secrets file %s: %s must be a string", file, e.key)
		}
		out[e.key] = v
	}
	return out, nil
}

// noSecrets is the SecretSource used when none is given.
type noSecrets struct{}

func (noSecrets) Secret(string) (string, bool) { return "", false }

var (
	_ SecretSource = staticSecrets(nil)
	_ SecretSource = noSecrets{}
)
