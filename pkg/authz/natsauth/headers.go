package natsauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	// HeaderRequestID carries the request id, on NATS as over HTTP (one
	// name: Echo's HeaderXRequestID, which a test holds it to).
	HeaderRequestID = "X-Request-Id"
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

// Request ids are defined here, once, for HTTP and NATS alike: the header
// (HeaderRequestID), the context carrier (WithRequestID,
// RequestIDFromContext), the format (NewRequestID) and the rule every
// inbound id passes (AcceptRequestID). pkg/platform, which owns the HTTP
// side (its middleware takes the inbound X-Request-Id, answers it and puts it
// here), imports natsauth, so they cannot live there; natsauth applies the
// rule to every message it receives (ContextFromHeaders) and stamps every
// message it sends.

// maxRequestIDLen bounds an inbound id: enough for any id format in use (a
// UUID is 36), too short to flood logs.
const maxRequestIDLen = 64

// NewRequestID returns a fresh request id: 32 random lowercase hex digits.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// AcceptRequestID returns inbound when it is a valid request id, else a
// fresh one (NewRequestID): valid is 1 to 64 of A-Z a-z 0-9 - _ . : so a
// sender cannot forge log structure or send huge ids. An invalid id is
// dropped, never echoed.
func AcceptRequestID(inbound string) string {
	if inbound == "" || len(inbound) > maxRequestIDLen {
		return NewRequestID()
	}
	for _, r := range inbound {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == ':':
		default:
			return NewRequestID()
		}
	}
	return inbound
}

// WithRequestID returns a context carrying the request id that outgoing
// messages built from it will carry in X-Request-Id (pkg/platform's HTTP
// middleware and ContextFromHeaders put the inbound one here, checked).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestIDFromContext returns the request id stored by WithRequestID.
func RequestIDFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(requestIDKey).(string)
	return id, ok && id != ""
}

// outgoingRequestID is the request id a message sent under ctx carries:
// ctx's, else (or if it is not valid) a fresh one.
func outgoingRequestID(ctx context.Context) string {
	id, _ := RequestIDFromContext(ctx)
	return AcceptRequestID(id)
}

// ContextFromHeaders returns ctx enriched with the request id and the W3C
// trace context (Propagator, any header casing) found in h, as received by a
// micro handler or a JetStream consumer: the receiver's span is then a child
// of the sender's, and whatever the handler sends next continues the trace.
// A missing or invalid request id is replaced by a fresh one
// (AcceptRequestID), as over HTTP; an invalid traceparent is ignored, as the
// W3C spec requires.
func ContextFromHeaders(ctx context.Context, h nats.Header) context.Context {
	ctx = WithRequestID(ctx, AcceptRequestID(h.Get(HeaderRequestID)))
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// newUUID returns a random RFC 9562 version 4 UUID: an event's id
// (Envelope.ID), never a request id (NewRequestID).
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
