package authz

import "strings"

// DPoPSignatureOnly does, for BenchmarkDPoP's floor, what verifying any DPoP
// proof costs at the least, by Verify's own code: find the key of the
// proof's header (the header cache) and check the proof's signature with
// it. No claim, binding or replay check: it never accepts a proof, it only
// times that part.
func (d *DPoP) DPoPSignatureOnly(proof string) bool {
	first, last := strings.IndexByte(proof, '.'), strings.LastIndexByte(proof, '.')
	if first <= 0 || first == last {
		return false
	}
	_, err := d.signedBy(proof, first, last)
	return err == nil
}
