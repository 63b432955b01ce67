package authz

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
)

// TxnContext is the tctx of a transaction token as the Transaction Token
// Service writes it: immutable facts about the transaction that every hop
// may rely on. OrgID and OrgName carry the Auth0 Organization of the access
// token the transaction started with, so that a consumer or receiver scopes
// data to it exactly as the HTTP edge did (TxnValidator copies them into
// Claims.OrgID and Claims.OrgName).
//
// Event binds the token to one JetStream event: a token with it authorizes
// exactly that message (its subject and payload bytes) and nothing else.
type TxnContext struct {
	AZP     string        `json:"azp"`                // the client the access token was issued to
	OrgID   string        `json:"org_id,omitempty"`   // the access token's org_id
	OrgName string        `json:"org_name,omitempty"` // the access token's org_name
	Event   *EventBinding `json:"evt,omitempty"`      // the one event the token may carry
}

// EventBinding names the one event a transaction token was issued for: the
// NATS subject it is published on and the SHA-256 of its payload (the
// envelope's exact bytes). The service that publishes the event asks for it
// while it serves the live request that caused the event, keeps the token
// with the event in its outbox, and may publish it later (a relay after an
// outage) without holding any other credential of the caller: the token
// cannot carry a changed payload, another event or another subject, and
// sending the same bytes again is a duplicate JetStream and the idempotent
// consumers absorb. Consumers require it (natsauth.Consumer).
type EventBinding struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"` // base64url (no padding) of the payload's SHA-256
}

// NewEventBinding binds a token to payload published on subject.
func NewEventBinding(subject string, payload []byte) EventBinding {
	sum := sha256.Sum256(payload)
	return EventBinding{Subject: subject, SHA256: base64.RawURLEncoding.EncodeToString(sum[:])}
}

// Matches reports whether a message on subject with payload is the bound
// event. The digests are compared in constant time.
func (b EventBinding) Matches(subject string, payload []byte) bool {
	want := NewEventBinding(subject, payload)
	return b.Subject == want.Subject && subtle.ConstantTimeCompare([]byte(b.SHA256), []byte(want.SHA256)) == 1
}

// Valid reports whether the binding names a subject and a SHA-256.
func (b EventBinding) Valid() bool {
	sum, err := base64.RawURLEncoding.DecodeString(b.SHA256)
	return b.Subject != "" && err == nil && len(sum) == sha256.Size
}

// applyTxnContext copies the organization of a verified tctx into c. A tctx
// that is not an object fails the token: the service never writes one.
func applyTxnContext(c *Claims, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var tc TxnContext
	if err := json.Unmarshal(raw, &tc); err != nil {
		return invalid("malformed", "the token's tctx could not be read", err)
	}
	if tc.Event != nil && !tc.Event.Valid() {
		return invalid("malformed", "the token's event binding is incomplete", nil)
	}
	c.OrgID, c.OrgName, c.Event = tc.OrgID, tc.OrgName, tc.Event
	return nil
}
