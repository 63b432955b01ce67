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

// PublishEvent seals an event under ctx's identity (see SealEvent) and
// publishes it: envelope id new, occurred_at now, Nats-Msg-Id
// "<type>:<entityID>" so a republish is de-duplicated. A service with an
// outbox seals first, stores the SealedEvent with its state change and
// publishes it after (SealedEvent.Publish).
func PublishEvent(ctx context.Context, js jetstream.JetStream, subj, typ, entityID, userID string, data any) (*jetstream.PubAck, error) {
	if entityID == "" {
		return nil, errors.New("natsauth: publish event: an entity id is required")
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("natsauth: publish event: data: %w", err)
	}
	ev, err := SealEvent(ctx, subj, typ+":"+entityID, Envelope{Type: typ, UserID: userID, Data: raw})
	if err != nil {
		return nil, err
	}
	return ev.Publish(ctx, js)
}

// SealedEvent is an event ready to publish with the one credential it
// needs: a transaction token bound to its subject and payload
// (authz.EventBinding), issued for the caller whose request caused it. It
// is meant to be stored: an outbox keeps it with the state change and its
// relay publishes it after an outage or a crash without holding any
// credential of that caller, or any of its own that could speak for them.
// The token is good for this event only — a changed byte, another subject
// or a request fails it — until Expires (hours, authz.MaxEventTxnLifetime).
type SealedEvent struct {
	Subject string          `json:"subject"`
	MsgID   string          `json:"msg_id"` // Nats-Msg-Id, "<type>:<entity id>"
	Payload json.RawMessage `json:"payload"`
	Token   string          `json:"token"`
	Expires time.Time       `json:"expires"`
}

// SealEvent builds env's payload and exchanges ctx's identity for a token
// bound to it: the caller's access token in an HTTP handler (with its DPoP
// proof where the edge verified one), or the service's own M2M token under
// AsService. It fills the envelope's actor (the token's sub), and its id and
// occurred_at when they are empty. A transaction token that came with a
// NATS request or event is not exchanged again: an event is sealed where a
// caller's own token is.
func SealEvent(ctx context.Context, subj, msgID string, env Envelope) (*SealedEvent, error) {
	if msgID == "" || env.Type == "" || env.UserID == "" {
		return nil, errors.New("natsauth: seal event: the message id, type and user id are required")
	}
	tok, forwarded, err := identityToken(ctx)
	switch {
	case err != nil:
		return nil, err
	case tok == "":
		return nil, errors.New("natsauth: seal event: no identity in context (use the caller's context or AsService)")
	case forwarded:
		return nil, errors.New("natsauth: seal event: a forwarded transaction token cannot seal an event (use the caller's access token or AsService)")
	}
	actor, ok := unverifiedSubject(tok)
	if !ok {
		return nil, errors.New("natsauth: seal event: token has no readable sub")
	}
	env.Actor = actor
	if env.ID == "" {
		env.ID = newUUID()
	}
	if env.OccurredAt.IsZero() {
		env.OccurredAt = time.Now()
	}
	env.OccurredAt = env.OccurredAt.UTC()
	payload, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("natsauth: seal event: %w", err)
	}
	txn, exp, err := exchangeEvent(ctx, tok, subj, payload)
	if err != nil {
		return nil, err
	}
	return &SealedEvent{Subject: subj, MsgID: msgID, Payload: payload, Token: txn, Expires: exp}, nil
}

// Publish publishes the event under its own token, with ctx's trace context
// and request id: ctx needs no identity.
func (e *SealedEvent) Publish(ctx context.Context, js jetstream.JetStream) (*jetstream.PubAck, error) {
	if e.Token == "" || e.MsgID == "" {
		return nil, errors.New("natsauth: publish event: the event is not sealed")
	}
	return publish(ctx, js, e.Subject, e.Payload, e.Token, e.MsgID)
}

// SealMargin is the time a sealed event may take to reach the stream: one
// whose token expires sooner is no longer published.
const SealMargin = time.Minute

// PublishBy is the last instant the event may be published: SealMargin
// before its token expires. After it, its outbox must settle the change
// another way, since nothing can speak for the caller any more.
func (e *SealedEvent) PublishBy() time.Time { return e.Expires.Add(-SealMargin) }

// Usable reports whether the event may still be published at now.
func (e *SealedEvent) Usable(now time.Time) bool { return now.Before(e.PublishBy()) }

// unverifiedSubject reads sub from the token an event is sealed under (an
// access token the edge verified, or the service's own): it only fills the
// envelope's actor, which consumers check against the verified transaction
// token anyway.
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

// Settings every stream of the mesh gets, events and dead letters alike
// (EnsureStream).
const (
	// StreamMaxAge keeps messages well beyond the oldest backlog a consumer
	// accepts (DefaultMaxBacklogAge): events for replays and audits, dead
	// letters for operators.
	StreamMaxAge = 30 * 24 * time.Hour
	// StreamDuplicates is the window in which a republished Nats-Msg-Id (an
	// outbox relay's retry) is dropped; later duplicates reach consumers,
	// which are idempotent.
	StreamDuplicates = 10 * time.Minute
)

// EnsureStream creates (or updates) a stream on subjects with the mesh's
// settings: file storage, limits retention, StreamMaxAge and
// StreamDuplicates, replicas (at least one).
func EnsureStream(ctx context.Context, js jetstream.JetStream, name, description string, subjects []string, replicas int) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    subjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      StreamMaxAge,
		Replicas:    max(replicas, 1),
		Duplicates:  StreamDuplicates,
	})
	if err != nil {
		return fmt.Errorf("natsauth: stream %s: %w", name, err)
	}
	return nil
}

// EnsureDeadLetterStream creates (or updates) the dead-letter stream a
// consuming service owns, e.g. ORDERS_DLQ on "dlq.orders.>" (EnsureStream).
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, name, prefix string, replicas int) error {
	return EnsureStream(ctx, js, name, "authmesh dead letters (header "+HeaderDLQReason+")", []string{prefix + ".>"}, replicas)
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
