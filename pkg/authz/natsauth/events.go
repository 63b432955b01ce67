package natsauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Envelope is the JSON payload of every event (docs/conventions.md).
type Envelope struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Actor      string          `json:"actor"`   // sub of the token in the headers
	UserID     string          `json:"user_id"` // whose data the event is about
	OccurredAt time.Time       `json:"occurred_at"`
	Data       json.RawMessage `json:"data"`
}

func (e *Envelope) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"id", e.ID}, {"type", e.Type}, {"actor", e.Actor}, {"user_id", e.UserID}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if e.OccurredAt.IsZero() {
		missing = append(missing, "occurred_at")
	}
	if len(missing) > 0 {
		return fmt.Errorf("envelope misses %s", strings.Join(missing, ", "))
	}
	return nil
}

// DecodeEnvelope parses an event payload and checks that every envelope
// field is present.
func DecodeEnvelope(data []byte) (*Envelope, error) {
	var e Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if dec.More() {
		return nil, errors.New("envelope: trailing data")
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// PublishEvent publishes an event on subj with the identity of ctx (the
// caller's token, or AsService's). It fills the envelope: a new id, actor =
// the sub of the token it sends, occurred_at = now; and sets
// Nats-Msg-Id = "<type>:<entityID>" so a republish is de-duplicated.
func PublishEvent(ctx context.Context, js jetstream.JetStream, subj, typ, entityID, userID string, data any) (*jetstream.PubAck, error) {
	if typ == "" || entityID == "" || userID == "" {
		return nil, errors.New("natsauth: publish event: type, entity id and user id are required")
	}
	tok, err := outgoingToken(ctx, subj)
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, errors.New("natsauth: publish event: no identity in context (use the caller's context or AsService)")
	}
	actor, ok := unverifiedSubject(tok)
	if !ok {
		return nil, errors.New("natsauth: publish event: token has no readable sub")
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("natsauth: publish event: data: %w", err)
	}
	payload, err := json.Marshal(Envelope{
		ID: newUUID(), Type: typ, Actor: actor, UserID: userID,
		OccurredAt: time.Now().UTC(), Data: raw,
	})
	if err != nil {
		return nil, fmt.Errorf("natsauth: publish event: %w", err)
	}
	return publish(ctx, js, subj, payload, tok, typ+":"+entityID)
}

// unverifiedSubject reads sub from our own outgoing transaction token: it only fills the
// envelope's actor, which consumers check against the verified token anyway.
func unverifiedSubject(tok string) (string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Sub == "" {
		return "", false
	}
	return c.Sub, true
}

// EnsureDeadLetterStream creates (or updates) the dead-letter stream a
// consuming service owns, e.g. ORDERS_DLQ on "dlq.orders.>". Dead letters are
// kept 30 days for operators.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, name, prefix string, replicas int) error {
	if replicas < 1 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "authmesh dead letters (header " + HeaderDLQReason + ")",
		Subjects:    []string{prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Replicas:    replicas,
		Duplicates:  10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("natsauth: dead-letter stream %s: %w", name, err)
	}
	return nil
}

// copyHeaders copies h for a dead letter: without tokens (dead letters are
// read by operators and kept for weeks, so they hold no credential of any
// kind) and without any Nats-* header. Those are instructions to the server
// (Nats-Expected-Stream, Nats-Expected-Last-Sequence, Nats-Rollup, Nats-TTL,
// Nats-Msg-Id…) that were true, or allowed, where the publisher sent them
// and are not at the dead-letter stream: kept, they would make it refuse
// the dead letter, so a publisher could keep a forged event out of it.
func copyHeaders(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if k == HeaderTxnToken || k == HeaderAuthorization || len(k) >= 5 && strings.EqualFold(k[:5], "nats-") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}
