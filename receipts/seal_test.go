package receipts

// sealed is a record with its hash, signature and key id appended.
type sealed struct {
	raw  []byte
	hash string
	sig  string
}

// seal is sealAppend on a copy of canonical.
func (s *signer) seal(canonical []byte) (sealed, error) {
	raw, h, sig, err := s.sealAppend(append(make([]byte, 0, len(canonical)+200), canonical...))
	return sealed{raw: raw, hash: h, sig: sig}, err
}

// sealHashOnly is hashAppend on a copy of canonical.
func sealHashOnly(canonical []byte) (sealed, error) {
	raw, h, err := hashAppend(append(make([]byte, 0, len(canonical)+80), canonical...))
	return sealed{raw: raw, hash: h}, err
}
