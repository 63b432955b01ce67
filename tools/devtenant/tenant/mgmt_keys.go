package tenant

// Management API: signing keys.

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
)

func keyJSON(k signingKey) map[string]any {
	sum := sha1.Sum(k.cert.Raw)
	hexSum := strings.ToUpper(hex.EncodeToString(sum[:]))
	var fp bytes.Buffer
	for i := 0; i < len(hexSum); i += 2 {
		if i > 0 {
			fp.WriteByte(':')
		}
		fp.WriteString(hexSum[i : i+2])
	}
	out := map[string]any{
		"kid": k.KID, "cert": k.Cert, "fingerprint": fp.String(), "thumbprint": strings.ToLower(hexSum),
		"current": k.State == "current", "next": k.State == "next", "previous": k.State == "previous",
		"revoked": k.State == "revoked",
	}
	if k.CurrentSince != nil {
		out["current_since"] = k.CurrentSince.Format(time.RFC3339)
	}
	if k.CurrentUntil != nil {
		out["current_until"] = k.CurrentUntil.Format(time.RFC3339)
	}
	if k.RevokedAt != nil {
		out["revoked_at"] = k.RevokedAt.Format(time.RFC3339)
	}
	return out
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	out := []map[string]any{}
	for _, k := range s.keys.list() {
		out = append(out, keyJSON(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	for _, k := range s.keys.list() {
		if k.KID == r.PathValue("kid") {
			writeJSON(w, http.StatusOK, keyJSON(k))
			return
		}
	}
	writeMgmtError(w, http.StatusNotFound, "Signing key not found", "inexistent_signing_key")
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	k, err := s.keys.rotate()
	if err != nil {
		note(r, "store_error", err.Error())
		writeMgmtError(w, http.StatusServiceUnavailable, "The key could not be rotated; try again", "temporarily_unavailable")
		return
	}
	note(r, "current_kid", k.KID)
	writeJSON(w, http.StatusCreated, map[string]string{"cert": k.Cert, "kid": k.KID})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	kid := r.PathValue("kid")
	var found *signingKey
	for _, k := range s.keys.list() {
		if k.KID == kid {
			found = &k
		}
	}
	if found == nil {
		writeMgmtError(w, http.StatusNotFound, "Signing key not found", "inexistent_signing_key")
		return
	}
	k, err := s.keys.revokePrevious(kid)
	switch {
	case errors.Is(err, ErrNoPreviousKey):
		writeMgmtError(w, http.StatusBadRequest, "Only the previous signing key can be revoked", "invalid_signing_key_state")
		return
	case err != nil:
		note(r, "store_error", err.Error())
		writeMgmtError(w, http.StatusServiceUnavailable, "The key could not be revoked; try again", "temporarily_unavailable")
		return
	}
	note(r, "revoked_kid", k.KID)
	writeJSON(w, http.StatusOK, map[string]string{"cert": k.Cert, "kid": k.KID})
}
