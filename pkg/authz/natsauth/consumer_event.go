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

// handle returns the result label for the latency histogram.
func (c *Consumer) handle(base context.Context, msg jetstream.Msg) string {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing to ack or dead-letter.
		c.count("rejected", "bad_metadata")
		return "rejected"
	}
	attempt := int(meta.NumDelivered)
	ctx := ContextFromHeaders(base, msg.Headers())

	if attempt > c.cfg.MaxDeliver {
		return c.deadLetter(ctx, msg, meta, &rejection{label: "max_deliveries", detail: "last attempt timed out or crashed"})
	}
	ev, tok, rej := c.verify(ctx, msg, meta)
	if rej != nil {
		if rej.transient && attempt < c.cfg.MaxDeliver {
			c.count("retried", rej.label)
			c.warn(ctx, msg, meta, "retried", rej.reason())
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
// consumer's policy, the envelope, actor == sub, and the on-behalf policy.
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
		return nil, "", authRejection(err)
	}
	if err := c.cfg.Policy.Authorize(claims); err != nil {
		return nil, "", &rejection{label: "not_authorized", detail: reasonOf(err)}
	}
	if c.cfg.Scopes != nil && !slices.ContainsFunc(c.cfg.Scopes(msg.Subject()), claims.HasScope) {
		return nil, "", &rejection{label: "not_authorized", detail: "wrong_hop_scope"}
	}
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
