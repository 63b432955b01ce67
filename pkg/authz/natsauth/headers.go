package natsauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

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
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderDLQReason     = "Authmesh-Dlq-Reason"
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
	traceKey
	tokenSourceKey
	outboundKey
)

// TraceContext is a W3C trace context (https://www.w3.org/TR/trace-context/).
type TraceContext struct {
	Traceparent string
	Tracestate  string
}

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

// WithTraceContext returns a context carrying an incoming W3C trace context.
// An invalid traceparent is ignored (a fresh trace is started instead when
// messages are built), as the W3C spec requires.
func WithTraceContext(ctx context.Context, tc TraceContext) context.Context {
	if !validTraceparent(tc.Traceparent) {
		return ctx
	}
	return context.WithValue(ctx, traceKey, tc)
}

// TraceContextFromContext returns the trace context stored by WithTraceContext.
func TraceContextFromContext(ctx context.Context) (TraceContext, bool) {
	tc, ok := ctx.Value(traceKey).(TraceContext)
	return tc, ok
}

// ContextFromHeaders returns ctx enriched with the request id and trace
// context found in h (as received by a micro handler or a JetStream consumer),
// so that whatever the handler sends next continues the same trace.
func ContextFromHeaders(ctx context.Context, h nats.Header) context.Context {
	if id := h.Get(HeaderRequestID); id != "" {
		ctx = WithRequestID(ctx, id)
	}
	if tp := h.Get(HeaderTraceparent); tp != "" {
		ctx = WithTraceContext(ctx, TraceContext{Traceparent: tp, Tracestate: h.Get(HeaderTracestate)})
	}
	return ctx
}

// outgoingTrace returns the traceparent/tracestate for a message sent under
// ctx: the incoming trace id and flags with a fresh parent id (this hop is a
// new span), or a new sampled trace when ctx has none.
func outgoingTrace(ctx context.Context) TraceContext {
	if tc, ok := TraceContextFromContext(ctx); ok {
		// validTraceparent guaranteed the layout "vv-<32>-<16>-ff".
		p := tc.Traceparent
		return TraceContext{
			Traceparent: "00-" + p[3:35] + "-" + randomHex(8) + "-" + p[53:55],
			Tracestate:  tc.Tracestate,
		}
	}
	return TraceContext{Traceparent: "00-" + randomHex(16) + "-" + randomHex(8) + "-01"}
}

func validTraceparent(s string) bool {
	// version 00 is exactly 55 chars; later versions may append fields.
	if len(s) < 55 || (len(s) > 55 && s[55] != '-') {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	if version == "ff" || (version == "00" && len(s) != 55) {
		return false
	}
	for _, f := range []string{version, traceID, parentID, flags} {
		if !isLowerHex(f) {
			return false
		}
	}
	return traceID != strings.Repeat("0", 32) && parentID != strings.Repeat("0", 16)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

// newUUID returns a random RFC 9562 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
