package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Authorization in traces. A decision is recorded on the span already in the
// request's context (the HTTP server span, a NATS server or consumer span):
// authz only annotates spans, it never starts or exports them, so it depends
// on the OpenTelemetry API and nothing else. With no SDK installed the span
// is a no-op and so is all of this.
//
// What is recorded is never a token, a proof or a claim that names a
// person: the subject only as SubjectHash, the client id (a machine's name),
// the key id, the policy's names and the failure code.

// Span attribute keys of authorization decisions.
const (
	AttrDecision     = attribute.Key("authz.decision")      // "allowed" or "denied"
	AttrErrorCode    = attribute.Key("authz.error_code")    // Code of a denial
	AttrReason       = attribute.Key("authz.reason")        // Error.Reason of a denial
	AttrPolicy       = attribute.Key("authz.policy")        // the policy's names, space-separated
	AttrClient       = attribute.Key("authz.azp")           // Claims.Client(): the client the token was issued to
	AttrSubjectHash  = attribute.Key("authz.sub_hash")      // SubjectHash(sub)
	AttrKeyID        = attribute.Key("authz.kid")           // the signing key's id
	AttrKeyCacheHit  = attribute.Key("authz.key_cache_hit") // the key was at hand, no refetch
	AttrTokenCached  = attribute.Key("authz.token_cache_hit")
	EventKeyRefetch  = "authz.key_refetch"
	EventRevocation  = "authz.revocation_hit"
	decisionAllowed  = "allowed"
	decisionDenied   = "denied"
	subjectHashLabel = "authmesh-sub:"
)

// SubjectHash is the short, stable stand-in for a token subject in logs,
// metrics and traces: operators can correlate one person's requests without
// the telemetry holding identities (the first 8 bytes of a domain-separated
// SHA-256, hex).
func SubjectHash(sub string) string {
	if sub == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(subjectHashLabel + sub))
	return hex.EncodeToString(sum[:8])
}

// RecordDecision annotates the span in ctx with an authorization decision:
// err == nil is allowed (c the verified claims, may be nil for a public
// policy), else denied with err's code and reason. A revoked token also adds
// the event authz.revocation_hit. The HTTP middleware and natsauth's
// receivers call it; it does nothing when ctx's span is not recording.
func RecordDecision(ctx context.Context, p Policy, c *Claims, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	var buf [7]attribute.KeyValue
	attrs := buf[:0]
	if label := p.traceLabel(); label != "" {
		attrs = append(attrs, AttrPolicy.String(label))
	}
	if c != nil {
		attrs = append(attrs, AttrSubjectHash.String(c.SubjectHash()), AttrKeyID.String(traceKID(c.KeyID)))
		if cl := c.Client(); cl != "" {
			attrs = append(attrs, AttrClient.String(cl))
		}
	}
	if err == nil {
		SetSpanAttributes(span, append(attrs, AttrDecision.String(decisionAllowed)))
		return
	}
	code, reason := CodeOf(err), ""
	var e *Error
	if errors.As(err, &e) {
		reason = e.Reason
	}
	if code == "" {
		code, reason = "internal_error", "internal"
	}
	attrs = append(attrs, AttrDecision.String(decisionDenied), AttrErrorCode.String(string(code)))
	if reason != "" {
		attrs = append(attrs, AttrReason.String(reason))
	}
	SetSpanAttributes(span, attrs)
	if reason == "revoked" {
		span.AddEvent(EventRevocation)
	}
}

// traceLabel is the policy as authz.policy records it: its names
// space-separated ("public" for Public), without allocating for the common
// single name.
func (p Policy) traceLabel() string {
	switch {
	case len(p.allOf)+len(p.anyOf) == 1:
		if len(p.allOf) == 1 {
			return p.allOf[0]
		}
		return p.anyOf[0]
	case len(p.allOf)+len(p.anyOf) > 1:
		return strings.Join(p.Names(), " ")
	case p.public:
		return "public"
	}
	return ""
}

// recordKeyLookup notes on ctx's span which key verified the token and
// whether it was at hand (false: the JWKS was fetched for it first).
func recordKeyLookup(ctx context.Context, kid string, hit bool) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		SetSpanAttributes(span, []attribute.KeyValue{AttrKeyID.String(traceKID(kid)), AttrKeyCacheHit.Bool(hit)})
	}
}

// recordRefetch adds the key refetch event to ctx's span: an unknown kid
// made the provider ask the JWKS again (or find it cooling down).
func recordRefetch(ctx context.Context, kid string, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	outcome := "fetched"
	switch {
	case errors.Is(err, errCoolingDown):
		outcome = "cooling_down"
	case err != nil:
		outcome = "failed"
	}
	span.AddEvent(EventKeyRefetch, trace.WithAttributes(AttrKeyID.String(traceKID(kid)), attribute.String("outcome", outcome)))
}

// traceKID is kid as recorded: a kid comes from the token's header, before
// any signature check, so one that is not a plain identifier (up to 128
// characters of [A-Za-z0-9_-]) is recorded as "(unrecognised)" — whatever
// a sender stuffs into it never reaches the trace store.
func traceKID(kid string) string {
	if !PlainID(kid) {
		return "(unrecognised)"
	}
	return kid
}

// PlainID reports whether s is a plain identifier, 1 to 128 characters of
// [A-Za-z0-9_-]: what a span may record of a value that came from outside.
// A token (its dots), an email (its @) or an Auth0 subject (its |) never is.
func PlainID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// recordTokenCacheHit notes that the token was verified before and its key
// is still published (the verified-token cache answered).
func recordTokenCacheHit(ctx context.Context) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		SetSpanAttributes(span, []attribute.KeyValue{AttrTokenCached.Bool(true), AttrKeyCacheHit.Bool(true)})
	}
}

// Tracer is otel.Tracer(name) for spans on a hot path: looked up once per
// installed tracer provider rather than on every span (the SDK's Tracer
// builds its configuration and takes a lock on each call). It follows the
// global provider: a later otel.SetTracerProvider is picked up. Safe for
// concurrent use.
type Tracer struct {
	name   string
	cached atomic.Pointer[providerTracer]
}

type providerTracer struct {
	p trace.TracerProvider
	t trace.Tracer
}

// NewTracer returns the Tracer of the instrumentation scope name.
func NewTracer(name string) *Tracer { return &Tracer{name: name} }

// Start starts a span as trace.Tracer.Start does, with the global provider's
// tracer of t's scope.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	p := otel.GetTracerProvider()
	c := t.cached.Load()
	if c == nil || c.p != p {
		c = &providerTracer{p: p, t: p.Tracer(t.name)}
		t.cached.Store(c)
	}
	return c.t.Start(ctx, name, opts...)
}

// TracerName is the instrumentation scope of authz's and natsauth's spans.
const TracerName = "github.com/authmesh/authmesh/pkg/authz"

// startFetchSpan starts the client span of a background fetch (JWKS, M2M
// token): a root of its own, since many requests may wait on it, linked to
// the request that triggered it when there is one.
func startFetchSpan(ctx context.Context, name string, trigger trace.SpanContext) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithNewRoot()}
	if trigger.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: trigger}))
	}
	return otel.Tracer(TracerName).Start(ctx, name, opts...)
}

// endFetchSpan marks a failed fetch. The error texts of key and token
// fetches name URLs and statuses, never a credential (their contract).
func endFetchSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}
