package authz

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"unsafe"
)

// header is the JOSE header of a token, with the fields we refuse.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
	JKU  json.RawMessage `json:"jku"`
	X5U  json.RawMessage `json:"x5u"`
	JWK  json.RawMessage `json:"jwk"`
	X5C  json.RawMessage `json:"x5c"`
}

var errTooLarge = invalid("too_large", "the token is too large", nil)

// checkPresented is the first check of every entry point: a token is there
// and small enough to look at.
func checkPresented(token string) error {
	if token == "" {
		return ErrMissingToken
	}
	if len(token) > MaxTokenBytes {
		return errTooLarge
	}
	return nil
}

// tokenHash keys the verified-token caches. It hashes the string's bytes in
// place: copying a 1–2 KB token would be the only allocation on the cached
// path. Sum256 does not retain it.
func tokenHash(token string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// headerCache remembers accepted headers by their encoded form. A tenant's
// tokens share a handful of headers (alg, typ and the kid of each signing
// key), so a token's header is almost always one seen before; check is a
// pure function of those bytes, so its answer can be reused. Refused
// headers are not stored, and the cache stops growing at maxHeaders entries.
type headerCache struct {
	check func(token string) (header, error) // parseHeader or parseTxnHeader; nil: parseHeader

	mu sync.RWMutex
	m  map[string]header
}

const maxHeaders = 64

func (c *headerCache) parse(token string) (header, error) {
	dot := strings.IndexByte(token, '.')
	if dot > 0 {
		c.mu.RLock()
		h, ok := c.m[token[:dot]]
		c.mu.RUnlock()
		if ok && strings.Count(token, ".") == 2 {
			return h, nil
		}
	}
	check := c.check
	if check == nil {
		check = parseHeader
	}
	h, err := check(token)
	if err != nil {
		return h, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]header)
	}
	if len(c.m) < maxHeaders {
		c.m[strings.Clone(token[:dot])] = h
	}
	c.mu.Unlock()
	return h, nil
}

// parseHeader checks an access token's header before any key is looked up:
// RS256 only, an access token's typ, and decodeHeader's rules.
func parseHeader(token string) (header, error) {
	h, err := decodeHeader(token)
	if err != nil {
		return h, err
	}
	if h.Alg != "RS256" {
		return h, invalid("algorithm", "the token must be signed with RS256", nil)
	}
	switch strings.ToLower(h.Typ) {
	case "", "jwt", "at+jwt", "application/at+jwt":
	default:
		return h, invalid("typ", "the token is not an access token", nil)
	}
	return h, nil
}

// decodeHeader decodes a compact JWS header and refuses what no token of
// ours may have: crit, any header field that names or carries a key (a token
// never chooses the key it is verified with), a missing kid.
func decodeHeader(token string) (header, error) {
	var h header
	dot := strings.IndexByte(token, '.')
	if dot <= 0 || strings.Count(token, ".") != 2 {
		return h, invalid("malformed", "the token is not a compact JWS", nil)
	}
	raw, err := base64.RawURLEncoding.DecodeString(token[:dot])
	if err != nil {
		return h, invalid("malformed", "the token header is not base64url", nil)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, invalid("malformed", "the token header is not JSON", nil)
	}
	switch {
	case h.Crit != nil:
		return h, invalid("crit_header", "the token has critical header parameters", nil)
	case h.JKU != nil || h.X5U != nil || h.JWK != nil || h.X5C != nil:
		return h, invalid("key_in_header", "the token header must not name or carry keys", nil)
	case h.Kid == "":
		return h, invalid("missing_kid", "the token header has no kid", nil)
	}
	return h, nil
}

// peekIssuer reads iss before verification, only to choose among several
// configured issuers; the verified iss is checked again afterwards.
func peekIssuer(token string) (string, error) {
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	raw, err := base64.RawURLEncoding.DecodeString(token[first+1 : last])
	if err != nil {
		return "", invalid("malformed", "the token payload is not base64url", nil)
	}
	var p struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", invalid("malformed", "the token payload is not JSON", nil)
	}
	return p.Iss, nil
}
