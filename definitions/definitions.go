// Package definitions embeds LatchGate's built-in defaults: the action
// manifests (manifests/*.yaml), the default policy (policies/*.rego and
// policies/data.json) and the shared test vectors (test_vectors/) that the
// gate and all three SDKs check themselves against.
//
// It holds data only, no logic. The file layout is stable; the contents of
// the default policy and catalogue change with releases.
package definitions

import "embed"

// Manifests holds manifests/*.yaml.
//
//go:embed manifests
var Manifests embed.FS

// Policies holds policies/*.rego (including *_test.rego) and policies/data.json.
//
//go:embed policies
var Policies embed.FS

// TestVectors holds test_vectors/ (jcs/, dpop/, receipts/).
//
//go:embed test_vectors
var TestVectors embed.FS
