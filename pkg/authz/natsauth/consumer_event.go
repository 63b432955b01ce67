package natsauth

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
)

// What happens to one event: verified, handled, retried or dead-lettered.

// rejection says why a message cannot be handled. label is a bounded metrics
// label; detail goes to the dead-letter reason header (never a token).
type rejection struct {
	label, detail string
	transient     bool // worth retrying (keys unavailable)
}

func (r *rejection) reason() string {
	if r.detail == "" || r.detail == r.label {
		return r.label
	}
	return r.label + ": " + r.detail
}

func (c *Consumer) process(base context.Context, msg jetstream.Msg) {
	start := c.now()
	result := c.handle(base, msg)
	if m := c.cfg.Metrics; m != nil {
		m.latency.WithLabelValues(c.cfg.Durable, result).Observe(time.Since(start).Seconds())
	}
}

// handle returns the result label for the latency histogram. Each delivery
// is one consumer span "process <subject>", a child of the publisher's
// producer span (see startConsumerSpan), ended with the delivery's result.
func (c *Consumer) handle(base context.Context, msg jetstream.Msg) (result string) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing to ack or dead-letter.
		c.count("rejected", "bad_metadata")
		return "rejected"
	}
	attempt := int(meta.NumDelivered)
	ctx, span := c.startConsumerSpan(base, msg, meta)
	defer func() { span.SetAttributes(attrResult.String(result)); span.End() }()

	if attempt > c.cfg.MaxDeliver {
		return c.deadLetter(ctx, msg, meta, &rejection{label: "max_deliveries", detail: "last attempt timed out or crashed"})
	}
	ev, tok, rej := c.verify(ctx, msg, meta)
	if rej != nil {
		if rej.transient && attempt < c.cfg.MaxDeliver {
			c.count("retried", rej.label)
			c.warn(ctx, msg, meta, "retried", rej.reason())
			c.retried(ctx, rej.label, attempt)
			_ = msg.NakWithDelay(c.backoff(attempt))
			return "retried"
		}
		return c.deadLetter(ctx, msg, meta, rej)
	}
	ev.Attempt = attempt
	hctx, cancel := context.WithTimeout(authz.WithClaims(ctx, ev.Claims, tok), c.cfg.AckWait)
	err = c.safeHandle(hctx, ev)
	cancel()
	if err == nil {
		if err := msg.DoubleAck(ctx); err != nil {
			// Unknown whether the server saw the ack: it will redeliver and the
			// idempotent handler will see the event again.
			c.count("retried", "ack_failed")
			c.warn(ctx, msg, meta, "retried", "ack_failed: "+err.Error())
			return "retried"
		}
		c.count("accepted", "ok")
		return "accepted"
	}
	if attempt < c.cfg.MaxDeliver {
		c.count("retried", "handler_error")
		c.warn(ctx, msg, meta, "retried", "handler_error: "+truncate(err.Error(), 200))
		c.retried(ctx, "handler_error", attempt)
		_ = msg.NakWithDelay(c.backoff(attempt))
		return "retried"
	}
	return c.deadLetter(ctx, msg, meta, &rejection{label: "handler_error", detail: truncate(err.Error(), 200)})
}

func (c *Consumer) safeHandle(ctx context.Context, ev *Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return c.h(ctx, ev)
}

// verify checks, in order: backlog age, token presence, the token as of the
// stored time (signature, issuer, audience, exp/iat, revocation), the
// consumer's policy and hop scopes, the token's binding to this very message
// (subject and payload), the envelope, actor == sub, and the on-behalf
// policy.
func (c *Consumer) verify(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) (*Event, string, *rejection) {
	stored := meta.Timestamp
	if age := c.now().Sub(stored); age > c.cfg.MaxBacklogAge {
		return nil, "", &rejection{label: "backlog_too_old", detail: fmt.Sprintf("stored %s ago, max %s", age.Round(time.Second), c.cfg.MaxBacklogAge)}
	}
	tok, err := tokenFromHeader(msg.Headers())
	if err != nil {
		return nil, "", authRejection(err)
	}
	claims, err := c.v.ValidateAt(ctx, tok, stored)
	if err != nil {
		authz.RecordDecision(ctx, c.cfg.Policy, nil, err)
		return nil, "", authRejection(err)
	}
	if err := c.cfg.Policy.Authorize(claims); err != nil {
		authz.RecordDecision(ctx, c.cfg.Policy, claims, err)
		return nil, "", &rejection{label: "not_authorized", detail: reasonOf(err)}
	}
	if c.cfg.Scopes != nil && !slices.ContainsFunc(c.cfg.Scopes(msg.Subject()), claims.HasScope) {
		authz.RecordDecision(ctx, c.cfg.Policy, claims, errWrongHopScope)
		return nil, "", &rejection{label: "not_authorized", detail: "wrong_hop_scope"}
	}
	if claims.Event == nil || !claims.Event.Matches(msg.Subject(), msg.Data()) {
		// The token was not issued for this message: an unbound token (a
		// request's), or one bound to another payload or subject.
		label := "event_mismatch"
		if claims.Event == nil {
			label = "event_unbound"
		}
		authz.RecordDecision(ctx, c.cfg.Policy, claims, errEventBinding)
		return nil, "", &rejection{label: label}
	}
	authz.RecordDecision(ctx, c.cfg.Policy, claims, nil)
	env, err := DecodeEnvelope(msg.Data())
	if err != nil {
		return nil, "", &rejection{label: "bad_payload", detail: truncate(err.Error(), 200)}
	}
	if env.Actor != claims.Subject {
		return nil, "", &rejection{label: "actor_mismatch", detail: "envelope actor is not the token's subject"}
	}
	if env.UserID != env.Actor {
		if err := c.cfg.OnBehalfPolicy.Authorize(claims); err != nil {
			return nil, "", &rejection{label: "on_behalf_denied", detail: reasonOf(err)}
		}
	}
	return &Event{Envelope: *env, Claims: claims, Subject: msg.Subject(), StoredAt: stored}, tok, nil
}

func authRejection(err error) *rejection {
	code := authz.CodeOf(err)
	if code == "" {
		return &rejection{label: "verify_error", transient: true}
	}
	return &rejection{label: string(code), detail: reasonOf(err), transient: code == authz.CodeKeysUnavailable}
}

// deadLetter publishes the message to <prefix>.<subject> with the reason and
// then terminates it. If the publish fails the message is nak'ed instead, so
// it comes back rather than being lost.
func (c *Consumer) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, rej *rejection) string {
	dl := nats.NewMsg(c.cfg.DeadLetterPrefix + "." + msg.Subject())
	dl.Data = msg.Data()
	dl.Header = copyHeaders(msg.Headers())
	dl.Header.Set(HeaderDLQReason, rej.reason())
	dl.Header.Set(HeaderDLQStream, meta.Stream)
	dl.Header.Set(HeaderDLQConsumer, meta.Consumer)
	dl.Header.Set(HeaderDLQSubject, msg.Subject())
	dl.Header.Set(HeaderDLQSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
	// A crash between publish and Term redelivers; the same id de-duplicates.
	dl.Header.Set(HeaderMsgID, "dlq:"+meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10))
	// The dead letter points at this delivery's span, not the publisher's.
	injectTrace(ctx, dl.Header)

	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := c.js.PublishMsg(pctx, dl); err != nil {
		c.count("retried", "dlq_unavailable")
		c.warn(ctx, msg, meta, "retried", "dlq_unavailable: "+err.Error())
		_ = msg.NakWithDelay(c.backoff(int(meta.NumDelivered)))
		return "retried"
	}
	_ = msg.TermWithReason(rej.label)
	c.count("rejected", rej.label)
	c.warn(ctx, msg, meta, "dead_lettered", rej.reason())
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(EventDeadLettered, trace.WithAttributes(attrReason.String(rej.label),
			attrDestination.String(dl.Subject), attrDelivered.Int64(int64(meta.NumDelivered))))
		span.SetStatus(codes.Error, "dead-lettered: "+rej.label)
	}
	if m := c.cfg.Metrics; m != nil {
		m.deadLettered.WithLabelValues(c.cfg.Durable, rej.label).Inc()
	}
	return "dead_lettered"
}

func (c *Consumer) backoff(attempt int) time.Duration {
	if len(c.cfg.BackOff) == 0 {
		return time.Second
	}
	return c.cfg.BackOff[min(max(attempt-1, 0), len(c.cfg.BackOff)-1)]
}

// warn logs an event that was not handled this time (see ConsumerConfig.Logger).
func (c *Consumer) warn(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, result, reason string) {
	if c.cfg.Logger == nil {
		return
	}
	c.cfg.Logger.WarnContext(ctx, "event not handled", slog.String("consumer", c.cfg.Durable),
		slog.String("subject", msg.Subject()), slog.Uint64("stream_seq", meta.Sequence.Stream),
		slog.Uint64("attempt", meta.NumDelivered), slog.String("result", result), slog.String("reason", reason))
}

func (c *Consumer) count(result, reason string) {
	if m := c.cfg.Metrics; m != nil {
		m.events.WithLabelValues(c.cfg.Durable, result, reason).Inc()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// errEventBinding is the denial recorded for an event whose token was not
// issued for it (authz.EventBinding).
var errEventBinding = &authz.Error{Code: authz.CodeInvalidToken, Reason: "event_binding",
	Description: "the transaction token is not bound to this event"}

// errWrongHopScope is the denial recorded for a token narrowed to another hop.
var errWrongHopScope = &authz.Error{Code: authz.CodeInsufficientScope, Reason: "wrong_hop_scope",
	Description: "the transaction token was narrowed for another hop"}

// startConsumerSpan starts a delivery's consumer span as a child of the
// publisher's producer span (the trace context in the message's headers).
//
// A child, not a span link: every message has exactly one producer, and a
// child keeps an entity's asynchronous hops in the trace that caused them
// (one trace per order). Each redelivery is another child of the same
// producer span, told apart by delivery_count and redelivered; the time the
// message waited in the stream is the gap between the producer span and
// stored_time and this span's start.
func (c *Consumer) startConsumerSpan(base context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) (context.Context, trace.Span) {
	ctx := ContextFromHeaders(base, msg.Headers())
	ctx, span := startSpan(ctx, trace.SpanKindConsumer, "process", msg.Subject())
	if !span.IsRecording() {
		return ctx, span // tracing off or not sampled: nothing to format
	}
	var buf [7]attribute.KeyValue
	attrs := append(buf[:0], attrConsumerGroup.String(meta.Consumer), attrStream.String(meta.Stream),
		attrStreamSeq.Int64(int64(meta.Sequence.Stream)), attrStored.String(meta.Timestamp.UTC().Format(time.RFC3339Nano)),
		attrDelivered.Int64(int64(meta.NumDelivered)))
	if meta.NumDelivered > 1 {
		attrs = append(attrs, attrRedelivered.Bool(true))
	}
	if id := msg.Headers().Get(HeaderMsgID); id != "" {
		attrs = append(attrs, eventType(id))
	}
	authz.SetSpanAttributes(span, attrs)
	return ctx, span
}

// retried notes on ctx's span that the delivery was nak'ed for another try.
func (c *Consumer) retried(ctx context.Context, reason string, attempt int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(EventRetried, trace.WithAttributes(attrReason.String(reason),
			attribute.String("messaging.jetstream.retry_in", c.backoff(attempt).String())))
		if reason == "handler_error" {
			span.SetStatus(codes.Error, reason)
		}
	}
}
