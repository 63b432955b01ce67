package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unsafe"

	fastjson "github.com/segmentio/encoding/json"
)

// ProofCheck is what a proof is checked against.
type ProofCheck struct {
	// Method and URI of the request (htm, htu). URI is absolute; its query
	// and fragment are ignored.
	Method, URI string
	// AccessToken, when set, must be the proof's ath (at a resource server);
	// empty at a token endpoint, where a proof has no ath.
	AccessToken string
	// Claims, when set, are what Validator.Validate returned for
	// AccessToken (which must be set with them): the proof's key must then be the one they are bound to
	// (cnf.jkt; unbound claims refuse the proof), and ath is compared with
	// the hash the Validator already took of the token. Like JKT, they are
	// the caller's word: claims of another token bind the proof to that one.
	Claims *Claims
	// JKT, when set, must be the thumbprint of the proof's key (the access
	// token's cnf.jkt, or the key a refresh token is bound to).
	JKT string
	// Nonce, when set, must be the proof's nonce exactly: a nonce the
	// checker handed out for this one exchange (the NATS server's INFO
	// nonce at CONNECT), instead of DPoPConfig.Nonces.
	Nonce string

	// forwarded: the proof reached a receiver other than the edge that
	// compared its htm and htu with the request (ForwardedProofVerifier).
	// They must be there but are not compared, and no server nonce applies.
	forwarded bool
}

// Proof is a verified proof.
type Proof struct {
	JKT      string // RFC 7638 SHA-256 thumbprint of its key, base64url
	JTI      string
	IssuedAt time.Time
}

// Verify checks proof against chk and claims its jti in the replay cache.
// Errors are *Error: CodeInvalidDPoPProof (Reason says which check),
// CodeInvalidToken when the proof does not match the token (ath, key
// binding), CodeUseDPoPNonce when a nonce is needed (the answer carries a
// fresh one), CodeKeysUnavailable when the replay cache does not answer
// (never accepted unchecked).
func (d *DPoP) Verify(ctx context.Context, proof string, chk ProofCheck) (*Proof, error) {
	// Small enough to be inlined: a caller that keeps no pointer to the
	// Proof (the middleware) has it on its stack.
	p, err := d.verify(ctx, proof, chk)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

func (d *DPoP) verify(ctx context.Context, proof string, chk ProofCheck) (Proof, error) {
	now := d.cfg.Now()
	p, err := d.check(proof, chk, now)
	if err != nil {
		return Proof{}, err
	}
	// Last, so that a proof failing any other check does not use up its jti.
	// The key includes the thumbprint: jtis are only unique per client.
	if m, ok := d.cfg.Replay.(*MemoryReplayCache); ok {
		err = m.claimProof(p.JKT, p.JTI, now, d.ReplayTTL())
	} else {
		err = d.cfg.Replay.Claim(ctx, replayKey(p.JKT, p.JTI), d.ReplayTTL())
	}
	if err != nil {
		if errors.Is(err, ErrReplayed) {
			return Proof{}, badProof("replayed", "the DPoP proof has been used before", err)
		}
		return Proof{}, &Error{Code: CodeKeysUnavailable, Reason: "replay_cache_unavailable",
			Description: "DPoP replay protection is temporarily unavailable; retry later", Err: err}
	}
	return p, nil
}

// replayKey is a KV-safe key naming the thumbprint and the jti (jtis are
// unique per client only). A jti of up to 64 base64url characters — what
// clients send: 96 to 256 random bits, or a UUID — is taken as it is, after
// the thumbprint and a dot; any other (a jti is any string, and an oversized
// one must not cost storage) as the hex SHA-256 of both, which has no dot.
func replayKey(jkt, jti string) string {
	var buf [maxReplayKeyBytes]byte
	return string(appendReplayKey(buf[:0], jkt, jti))
}

// maxReplayKeyBytes is replayKey's length for a SHA-256 thumbprint.
const maxReplayKeyBytes = 43 + 1 + 64

// appendReplayKey appends replayKey(jkt, jti) to b.
func appendReplayKey(b []byte, jkt, jti string) []byte {
	if len(jti) <= 64 && isBase64URL(jti) && isBase64URL(jkt) {
		b = append(b, jkt...)
		b = append(b, '.')
		return append(b, jti...)
	}
	h := sha256.New()
	h.Write(bytesOf(jkt))
	h.Write([]byte{0})
	h.Write(bytesOf(jti))
	var sum [sha256.Size]byte
	return hex.AppendEncode(b, h.Sum(sum[:0]))
}

// isBase64URL reports whether s is non-empty and all base64url characters.
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// check does every check but the replay claim, at now.
func (d *DPoP) check(proof string, chk ProofCheck, now time.Time) (Proof, error) {
	if proof == "" {
		return Proof{}, badProof("missing_proof", "a DPoP proof is required", nil)
	}
	if len(proof) > MaxDPoPProofBytes {
		return Proof{}, badProof("too_large", "the DPoP proof is too large", nil)
	}
	first, last := strings.IndexByte(proof, '.'), strings.LastIndexByte(proof, '.')
	if first == last || strings.IndexByte(proof[first+1:last], '.') >= 0 { // not two dots
		return Proof{}, badProof("malformed", "the DPoP proof is not a compact JWS", nil)
	}
	k, err := d.signedBy(proof, first, last)
	if err != nil {
		return Proof{}, err
	}
	var pc proofClaims
	if err := decodeProofClaims(proof[first+1:last], &pc); err != nil {
		return Proof{}, err
	}
	switch {
	case pc.JTI == "":
		return Proof{}, badProof("no_jti", "the DPoP proof has no jti", nil)
	case len(pc.JTI) > maxJTIBytes:
		return Proof{}, badProof("jti_too_long", "the DPoP proof's jti is too long", nil)
	case pc.HTM == "" || pc.HTU == "" || !pc.hasIAT:
		return Proof{}, badProof("missing_claim", "the DPoP proof needs htm, htu and iat", nil)
	case !chk.forwarded && pc.HTM != chk.Method:
		return Proof{}, badProof("htm", "the DPoP proof is for another method", nil)
	}
	if !chk.forwarded && !sameHTU(pc.HTU, chk.URI) {
		return Proof{}, badProof("htu", "the DPoP proof is for another URI", nil)
	}
	iat := time.Unix(int64(pc.IAT), 0)
	if iat.Before(now.Add(-d.cfg.MaxAge)) {
		return Proof{}, badProof("stale", "the DPoP proof is too old", nil)
	}
	if iat.After(now.Add(d.cfg.FutureSkew)) {
		return Proof{}, badProof("future", "the DPoP proof is issued in the future", nil)
	}
	if err := checkATH(&pc, chk); err != nil {
		return Proof{}, err
	}
	if err := checkBinding(k.jkt, chk); err != nil {
		return Proof{}, err
	}
	switch {
	case chk.forwarded:
		// The edge asked for its nonce, if any; the receiver has none.
	case chk.Nonce != "":
		if !pc.hasNonce || !equalSecret(pc.Nonce, chk.Nonce) {
			return Proof{}, badProof("nonce", "the DPoP proof does not carry this exchange's nonce", nil)
		}
	case d.cfg.Nonces != nil:
		if !pc.hasNonce || !d.cfg.Nonces.valid(pc.Nonce, now) {
			return Proof{}, &Error{Code: CodeUseDPoPNonce, Reason: "nonce", Description: "a current server nonce is required in the DPoP proof"}
		}
	}
	return Proof{JKT: k.jkt, JTI: pc.JTI, IssuedAt: iat}, nil
}

// signedBy returns the key of the compact JWS proof (whose dots are at first
// and last), from the header cache or read from its header, once the proof's
// signature verified with it; a header is cached only then.
func (d *DPoP) signedBy(proof string, first, last int) (*proofKey, error) {
	hdr := proof[:first]
	k, cached := d.keys.get(hdr)
	if !cached {
		var err error
		if k, err = d.readProofHeader(hdr); err != nil {
			return nil, err
		}
	}
	if !k.verifySignature(proof, last) {
		return nil, badProof("bad_signature", "the DPoP proof's signature is invalid", nil)
	}
	if !cached {
		d.keys.put(hdr, k)
	}
	return k, nil
}

// checkATH checks the proof's ath against the access token, when there is
// one: the base64url SHA-256 of its ASCII (RFC 9449 §4.3).
func checkATH(pc *proofClaims, chk ProofCheck) error {
	if chk.AccessToken == "" {
		if chk.Claims != nil { // claims of no token: fail closed
			return invalid("dpop_ath", "the DPoP proof is not for this access token", nil)
		}
		return nil
	}
	if !pc.hasATH {
		return badProof("no_ath", "the DPoP proof has no ath", nil)
	}
	var sum [sha256.Size]byte
	if c := chk.Claims; c != nil && c.summed {
		sum = c.tokenSum
	} else {
		sum = sha256.Sum256(bytesOf(chk.AccessToken))
	}
	var want [43]byte // base64url of 32 bytes, unpadded
	base64.RawURLEncoding.Encode(want[:], sum[:])
	if !equalSecret(pc.ATH, unsafe.String(&want[0], len(want))) {
		return invalid("dpop_ath", "the DPoP proof is not for this access token", nil)
	}
	return nil
}

// checkBinding checks that the proof's key is the one the token (chk.Claims,
// chk.JKT) is bound to.
func checkBinding(jkt string, chk ProofCheck) error {
	if c := chk.Claims; c != nil && (c.JKT == "" || !equalSecret(jkt, c.JKT)) {
		return invalid("dpop_binding", "Invalid DPoP key binding", nil)
	}
	if chk.JKT != "" && !equalSecret(jkt, chk.JKT) {
		return invalid("dpop_binding", "Invalid DPoP key binding", nil)
	}
	return nil
}

// equalSecret compares in constant time (for equal lengths).
func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare(bytesOf(a), bytesOf(b)) == 1
}

// proofClaims are a proof's payload; has* say whether a claim was there.
type proofClaims struct {
	JTI, HTM, HTU, ATH, Nonce string
	IAT                       float64
	hasIAT, hasATH, hasNonce  bool
}

// proofClaimsJSON is proofClaims for the JSON decoder.
type proofClaimsJSON struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	ATH   *string  `json:"ath"`
	Nonce *string  `json:"nonce"`
}

// decodeProofClaims decodes the encoded payload of a proof whose signature
// verified. Proofs almost always have one shape — a flat object of the
// claims above, ASCII strings without escapes, an integer iat — which
// scanProofClaims reads in place; anything else goes to the JSON decoder
// (segmentio/encoding/json, as for access tokens' claims), which is the
// reference: a test holds the scanner to its answers.
func decodeProofClaims(enc string, pc *proofClaims) error {
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return badProof("malformed", "the DPoP proof payload is not base64url", err)
	}
	// The claims' strings point into raw, which nothing writes again.
	if len(raw) > 0 && scanProofClaims(unsafe.String(&raw[0], len(raw)), pc) {
		return nil
	}
	var j proofClaimsJSON
	if err := fastjson.Unmarshal(raw, &j); err != nil {
		return badProof("malformed", "the DPoP proof's claims are not a JSON object of the right types", err)
	}
	*pc = j.claims()
	return nil
}

func (j *proofClaimsJSON) claims() proofClaims {
	pc := proofClaims{JTI: j.JTI, HTM: j.HTM, HTU: j.HTU}
	if j.IAT != nil {
		pc.IAT, pc.hasIAT = *j.IAT, true
	}
	if j.ATH != nil {
		pc.ATH, pc.hasATH = *j.ATH, true
	}
	if j.Nonce != nil {
		pc.Nonce, pc.hasNonce = *j.Nonce, true
	}
	return pc
}

// scanProofClaims reads p into pc if p is a JSON object of only the members
// jti, htm, htu, ath and nonce as strings of printable ASCII without
// escapes, and iat as an integer of at most 15 digits, each at most once.
// It reports false for anything else, leaving pc partly written.
func scanProofClaims(p string, pc *proofClaims) bool {
	i := skipSpace(p, 0)
	if i == len(p) || p[i] != '{' {
		return false
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return skipSpace(p, i+1) == len(p)
	}
	var seen uint8
	for {
		name, j, ok := scanPlainString(p, i)
		if !ok {
			return false
		}
		i = skipSpace(p, j)
		if i == len(p) || p[i] != ':' {
			return false
		}
		i = skipSpace(p, i+1)
		var bit uint8
		var dst *string
		switch name {
		case "jti":
			bit, dst = 1, &pc.JTI
		case "htm":
			bit, dst = 2, &pc.HTM
		case "htu":
			bit, dst = 4, &pc.HTU
		case "ath":
			bit, dst, pc.hasATH = 8, &pc.ATH, true
		case "nonce":
			bit, dst, pc.hasNonce = 16, &pc.Nonce, true
		case "iat":
			bit = 32
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if dst != nil {
			if *dst, j, ok = scanPlainString(p, i); !ok {
				return false
			}
		} else {
			var n int64
			if n, j, ok = scanPlainInt(p, i); !ok {
				return false
			}
			pc.IAT, pc.hasIAT = float64(n), true
		}
		i = skipSpace(p, j)
		if i == len(p) {
			return false
		}
		if p[i] == '}' {
			return skipSpace(p, i+1) == len(p)
		}
		if p[i] != ',' {
			return false
		}
		i = skipSpace(p, i+1)
	}
}

// scanPlainString reads a JSON string at p[i] made of printable ASCII
// without escapes, and returns its content and the index after it.
func scanPlainString(p string, i int) (string, int, bool) {
	if i == len(p) || p[i] != '"' {
		return "", i, false
	}
	end := strings.IndexByte(p[i+1:], '"')
	if end < 0 {
		return "", len(p), false
	}
	s := p[i+1 : i+1+end]
	if !isPlainASCII(s) {
		return "", i, false
	}
	return s, i + end + 2, true
}

// isPlainASCII reports whether s is all printable ASCII (0x20 to 0x7e)
// without a backslash, eight bytes at a time.
func isPlainASCII(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(s) >= 8 {
		w := binary.LittleEndian.Uint64(bytesOf(s[:8]))
		// A byte's high bit is set in each term when the byte is non-ASCII,
		// below 0x20, 0x7f, or a backslash (each "has zero byte" test).
		bad := w | (w - 0x20*ones) | ((w ^ 0x7f*ones) - ones) | ((w ^ '\\'*ones) - ones)
		if bad&highs != 0 {
			return false
		}
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// scanPlainInt reads a non-negative JSON integer of 1 to 15 digits (exact
// as a float64) at p[i], not followed by a fraction or exponent.
func scanPlainInt(p string, i int) (int64, int, bool) {
	var n int64
	j := i
	for ; j < len(p) && p[j] >= '0' && p[j] <= '9'; j++ {
		n = n*10 + int64(p[j]-'0')
	}
	digits := j - i
	if digits == 0 || digits > 15 || (digits > 1 && p[i] == '0') {
		return 0, j, false
	}
	if j < len(p) && (p[j] == '.' || p[j] == 'e' || p[j] == 'E') {
		return 0, j, false
	}
	return n, j, true
}

func skipSpace(p string, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}
