package platform

import (
	"fmt"

	"github.com/authmesh/authmesh/pkg/authz"
)

// Txn is where a service finds the Transaction Token Service's keys and which
// transaction tokens it accepts.
type Txn struct {
	JWKSURL     string // AUTHMESH_TTS_JWKS_URL
	Issuer      string // AUTHMESH_TTS_ISSUER
	TrustDomain string // AUTHMESH_TRUST_DOMAIN
}

// DefaultTTSJWKSURL is the local stack's Transaction Token Service JWKS.
const DefaultTTSJWKSURL = "http://localhost:8406/.well-known/jwks.json"

// TokenServiceName is the Transaction Token Service's name (its variables
// are prefixed TTS_).
const TokenServiceName = "tts"

// loadTxn reads the transaction token settings; devDefault marks the local
// JWKS URL as a dev default, which a real tenant's deployment must replace.
func loadTxn(get, devDefault func(string, string) string) (Txn, error) {
	t := Txn{
		JWKSURL:     devDefault("AUTHMESH_TTS_JWKS_URL", DefaultTTSJWKSURL),
		Issuer:      get("AUTHMESH_TTS_ISSUER", authz.DefaultTxnIssuer),
		TrustDomain: get("AUTHMESH_TRUST_DOMAIN", authz.DefaultTrustDomain),
	}
	if t.JWKSURL != "" {
		if err := checkURL("AUTHMESH_TTS_JWKS_URL", t.JWKSURL); err != nil {
			return t, err
		}
	}
	if t.Issuer == t.TrustDomain {
		return t, fmt.Errorf("AUTHMESH_TTS_ISSUER and AUTHMESH_TRUST_DOMAIN must differ (%q)", t.Issuer)
	}
	return t, nil
}
