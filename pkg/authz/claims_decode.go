package authz

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
	"unsafe"

	fastjson "github.com/segmentio/encoding/json"
)

// payloadBufs recycles the buffers payloads are decoded into: dst copies
// what it keeps (segmentio/encoding/json copies strings unless told not
// to), so a buffer is free again once UnmarshalJSON returns.
var payloadBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledPayload bounds the buffers kept in payloadBufs: a rare large
// token does not pin its buffer.
const maxPooledPayload = 8 << 10

// decodePayload decodes the payload of a token whose signature has been
// verified into dst.
func decodePayload(token string, dst json.Unmarshaler) error {
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	enc := token[first+1 : last]
	bp := payloadBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledPayload {
			payloadBufs.Put(bp)
		}
	}()
	if n := base64.RawURLEncoding.DecodedLen(len(enc)); cap(*bp) < n {
		*bp = make([]byte, n)
	}
	buf := (*bp)[:cap(*bp)]
	n, err := base64.RawURLEncoding.Decode(buf, unsafe.Slice(unsafe.StringData(enc), len(enc)))
	if err != nil {
		return invalid("malformed", "the token payload is not base64url", err)
	}
	if err := dst.UnmarshalJSON(buf[:n]); err != nil {
		return invalid("malformed", "the token could not be read", err)
	}
	return nil
}

// tokenClaims are an access token's non-registered claims, decoded once the
// signature checks out. A claim of the wrong JSON type fails the token.
type tokenClaims struct {
	rolesClaim string

	scope       string
	permissions []string
	roles       []string
	azp         string
	clientID    string
	jti         string
	gty         []string
	orgID       string
	orgName     string
	jkt         string
}

type defaultClaimsJSON struct {
	Scope       string      `json:"scope"`
	Permissions []string    `json:"permissions"`
	Roles       []string    `json:"https://authmesh.dev/roles"`
	AZP         string      `json:"azp"`
	ClientID    string      `json:"client_id"` // RFC 9068 profile
	JTI         string      `json:"jti"`       // RFC 9068 profile
	GTY         looseString `json:"gty"`
	OrgID       string      `json:"org_id"`
	OrgName     string      `json:"org_name"`
	Cnf         struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
}

// UnmarshalJSON decodes the payload with segmentio/encoding/json, a drop-in
// encoding/json (same rules: it passes the standard library's tests) about
// four times faster on an Auth0 payload, which is a tenth of a cold
// validation. It only ever reads a payload whose signature was verified.
func (t *tokenClaims) UnmarshalJSON(b []byte) error {
	var d defaultClaimsJSON
	if err := fastjson.Unmarshal(b, &d); err != nil {
		return err
	}
	t.scope, t.permissions, t.azp, t.gty, t.orgID, t.orgName = d.Scope, d.Permissions, d.AZP, d.GTY, d.OrgID, d.OrgName
	t.clientID, t.jti = d.ClientID, d.JTI
	t.jkt = d.Cnf.JKT
	t.roles = d.Roles
	if t.rolesClaim != "" && t.rolesClaim != DefaultRolesClaim {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		t.roles = nil
		if raw, ok := m[t.rolesClaim]; ok {
			if err := json.Unmarshal(raw, &t.roles); err != nil {
				return fmt.Errorf("roles claim: %w", err)
			}
		}
	}
	return nil
}

func (t *tokenClaims) claims(sub, iss string, aud []string, iat, exp int64, kid string) *Claims {
	c := &Claims{
		Subject:     sub,
		Issuer:      iss,
		Audience:    aud,
		ExpiresAt:   time.Unix(exp, 0),
		KeyID:       kid,
		Scopes:      ParseScopes(t.scope),
		Permissions: t.permissions,
		Roles:       t.roles,
		AZP:         t.azp,
		ClientID:    t.clientID,
		JTI:         t.jti,
		GTY:         t.gty,
		OrgID:       t.orgID,
		OrgName:     t.orgName,
		JKT:         t.jkt,
	}
	if iat != 0 {
		c.IssuedAt = time.Unix(iat, 0)
	}
	return c
}

// looseString accepts a string or an array of strings (gty in some mocks).
type looseString []string

func (l *looseString) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = looseString{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*l = a
	return nil
}
