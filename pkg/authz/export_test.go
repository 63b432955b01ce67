package authz

import "strings"

// DPoPSignatureOnly does, for BenchmarkDPoP's floor, what verifying any DPoP
// proof costs at the least: find the key of the proof's header (the header
// cache, as Verify does) and check the proof's signature with it. No claim,
// binding or replay check: it never accepts a proof, it only times that part.
func (d *DPoP) DPoPSignatureOnly(proof string) bool {
	first, last := strings.IndexByte(proof, '.'), strings.LastIndexByte(proof, '.')
	if first < 0 || first == last {
		return false
	}
	k, ok := d.keys.get(proof[:first])
	if !ok {
		var err error
		if k, err = d.readProofHeader(proof[:first]); err != nil {
			return false
		}
		d.keys.put(proof[:first], k)
	}
	return k.verifySignature(proof, last)
}
