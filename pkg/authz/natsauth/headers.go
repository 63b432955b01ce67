package natsauth

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Header names. NATS headers are case-sensitive, so every producer and
// consumer must use exactly these spellings (docs/conventions.md).
const (
	// HeaderTxnToken carries the transaction token of every authenticated
	// message (draft-ietf-oauth-transaction-tokens' header name).
	HeaderTxnToken = "Txn-Token"
	// HeaderAuthorization is refused on NATS: access tokens stay at the edge.
	HeaderAuthorization = "Authorization"
	HeaderRequestID     = "X-Request-Id"
	// W3C trace context (Propagator writes them, HeaderCarrier reads any case).
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderDLQReason   = "Authmesh-Dlq-Reason"
)

// Headers copied onto dead letters so operators can see where they came from.
const (
	HeaderDLQStream   = "Authmesh-Dlq-Stream"
	HeaderDLQConsumer = "Authmesh-Dlq-Consumer"
	HeaderDLQSubject  = "Authmesh-Dlq-Subject"
	HeaderDLQSequence = "Authmesh-Dlq-Sequence"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	tokenSourceKey
	outboundKey
)

// WithRequestID returns a context carrying the request id that outgoing
// messages built from it will carry in X-Request-Id (the HTTP layer puts the
// Echo request id here).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestIDFromContext returns the request id stored by WithRequestID.
func RequestIDFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(requestIDKey).(string)
	return id, ok && id != ""
}

// ContextFromHeaders returns ctx enriched with the request id and the W3C
// trace context (Propagator, any header casing) found in h, as received by a
// micro handler or a JetStream consumer: the receiver's span is then a child
// of the sender's, and whatever the handler sends next continues the trace.
// An invalid traceparent is ignored, as the W3C spec requires.
func ContextFromHeaders(ctx context.Context, h nats.Header) context.Context {
	if id := h.Get(HeaderRequestID); id != "" {
		ctx = WithRequestID(ctx, id)
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// newUUID returns a random RFC 9562 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
