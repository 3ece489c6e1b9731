package gate

import (
	"bytes"
	"context"
	"crypto/ed25519"

	"github.com/latchgate/latchgate/receipts"
)

// receiptKeyShare is a store several gates share (Redis) in which each
// publishes its receipt public keys: a gate then checks, and its JWKS
// lists, the keys of receipts another gate wrote (served from the copies
// in the same store).
type receiptKeyShare interface {
	PutReceiptKeys(ctx context.Context, jwks []byte) error
	ReceiptKeys(ctx context.Context) ([][]byte, error)
}

// ShareReceiptKeys publishes this gate's receipt key set to a shared
// store unless that set was already published (a no-op for the embedded
// store). RunSweeper calls it at start and on every tick (so a gate that
// started while Redis was down publishes once it answers), and a key
// rotation calls it; a failure only means other gates answer
// unknown_key_id for this gate's receipts until the next try.
func (g *Gate) ShareReceiptKeys(ctx context.Context) {
	ks, ok := g.st.(receiptKeyShare)
	if !ok {
		return
	}
	set := g.led.KeySet()
	if last := g.sharedKeys.Load(); last != nil && bytes.Equal(*last, set) {
		return
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	if err := ks.PutReceiptKeys(sctx, set); err != nil {
		g.log.Warn().Err(err).Msg("publishing the receipt keys to the shared store failed; retrying on the next sweep")
		return
	}
	g.sharedKeys.Store(&set)
}

// receiptKeys returns this gate's receipt keys and, with a shared store,
// those the other gates published (the store's MAC vouches for them). A
// store failure leaves only this gate's keys.
func (g *Gate) receiptKeys(ctx context.Context) map[string]ed25519.PublicKey {
	keys := g.led.Keys()
	ks, ok := g.st.(receiptKeyShare)
	if !ok {
		return keys
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	sets, err := ks.ReceiptKeys(sctx)
	if err != nil {
		g.log.Warn().Err(err).Msg("reading the other gates' receipt keys failed; serving this gate's only")
		return keys
	}
	for _, raw := range sets {
		m, err := receipts.ParseKeySet(raw)
		if err != nil {
			g.log.Warn().Err(err).Msg("a published receipt key set does not parse; skipped")
			continue
		}
		for kid, pub := range m {
			if _, ok := keys[kid]; !ok {
				keys[kid] = pub
			}
		}
	}
	return keys
}
