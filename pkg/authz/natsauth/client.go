package natsauth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
)

// AsService returns a context under which outgoing messages carry a
// transaction token whose subject is the service itself, exchanged for its
// own M2M token from ts (see m2m.ClientCredentials). Use it for work no user
// started, such as cancelling a blocked user's orders. The M2M token itself
// never crosses NATS except to the Transaction Token Service.
func AsService(ctx context.Context, ts m2m.TokenSource) context.Context {
	return context.WithValue(ctx, tokenSourceKey, ts)
}

// outgoingToken picks the transaction token a message for subj sent under ctx
// carries:
//   - under AsService, the service's own transaction, exchanged for its M2M
//     token (an explicit choice by the code that set it, so it wins);
//   - in a handler of a NATS request or event, the transaction token that
//     came with it, forwarded unmodified (it is bound to that transaction);
//   - in an HTTP handler, a transaction token exchanged for the caller's
//     access token, narrowed to what subj's receivers check.
//
// A context without any identity yields "", which only Public endpoints
// accept.
func outgoingToken(ctx context.Context, subj string) (string, error) {
	tok, forwarded, err := identityToken(ctx)
	if err != nil || forwarded || tok == "" {
		return tok, err
	}
	return exchange(ctx, tok, subj)
}

// identityToken returns the token that stands for ctx's identity: the
// service's M2M token under AsService, else the caller's token, which is a
// transaction token to forward (forwarded=true) or an access token to
// exchange.
func identityToken(ctx context.Context) (tok string, forwarded bool, err error) {
	if ts, ok := ctx.Value(tokenSourceKey).(m2m.TokenSource); ok && ts != nil {
		tok, err := ts.Token(ctx)
		if err != nil {
			return "", false, fmt.Errorf("natsauth: service token: %w", err)
		}
		return tok, false, nil
	}
	tok, ok := authz.TokenFromContext(ctx)
	if !ok {
		return "", false, nil
	}
	c, _ := authz.ClaimsFromContext(ctx)
	if c != nil && c.IsTxn() {
		return tok, true, nil
	}
	if c != nil && c.JKT != "" {
		// A DPoP-bound token is good only with a proof for one HTTP
		// request: it is exchanged (TxnClient says the proof was verified)
		// only where the edge verified that proof, never forwarded.
		if _, ok := authz.DPoPVerifiedFromContext(ctx); !ok {
			return "", false, errDPoPUnverified
		}
	}
	return tok, false, nil
}

// errDPoPUnverified: a DPoP-bound token in a context where no proof was
// verified for it (claims put there by hand, say).
var errDPoPUnverified = errors.New("natsauth: a DPoP-bound token is exchanged only in the request whose DPoP proof the middleware verified")

// NewMsg builds a message for subj carrying, from ctx: the transaction token
// (see outgoingToken) in Txn-Token, the W3C trace context of ctx's span
// (Propagator; none when ctx has no trace) and the request id
// (WithRequestID, else a fresh one). A context with no identity yields a message without Txn-Token, which
// only Public endpoints accept.
func NewMsg(ctx context.Context, subj string, data []byte) (*nats.Msg, error) {
	tok, err := outgoingToken(ctx, subj)
	if err != nil {
		return nil, err
	}
	return buildMsg(ctx, subj, data, tok), nil
}

func buildMsg(ctx context.Context, subj string, data []byte, tok string) *nats.Msg {
	msg := nats.NewMsg(subj)
	msg.Data = data
	if tok != "" {
		msg.Header.Set(HeaderTxnToken, tok)
	}
	msg.Header.Set(HeaderRequestID, outgoingRequestID(ctx))
	injectTrace(ctx, msg.Header)
	return msg
}

// Request sends a request built by NewMsg and waits for the reply until ctx
// ends (give ctx a deadline). A micro error reply is returned as a
// *ServiceError; authz.CodeOf works on it for 401/403/503 answers.
//
// Under AsService, a 401 invalid_token answer means the service's own
// identity is dead: the receiver refused the transaction token (signed by a
// key the Transaction Token Service has since retired, say), or the
// Transaction Token Service refused the M2M token itself (the tenant revoked
// the key that signed it). When the token source is an m2m.Invalidator, Request
// drops the M2M token and its exchanged transaction tokens and retries once
// with new ones. The caller's own token is never retried: only the caller
// can renew it.
func Request(ctx context.Context, nc *nats.Conn, subj string, data []byte) (*nats.Msg, error) {
	reply, err := sendRequest(ctx, nc, subj, data)
	ts, _ := ctx.Value(tokenSourceKey).(m2m.TokenSource)
	inv, ok := ts.(m2m.Invalidator)
	if !ok || authz.CodeOf(err) != authz.CodeInvalidToken {
		return reply, err
	}
	if m2m, terr := ts.Token(ctx); terr == nil {
		forget(ctx, m2m)
		inv.Invalidate(m2m)
	}
	return sendRequest(ctx, nc, subj, data)
}

func sendRequest(ctx context.Context, nc *nats.Conn, subj string, data []byte) (*nats.Msg, error) {
	tok, err := outgoingToken(ctx, subj)
	if err != nil {
		return nil, err
	}
	return request(ctx, nc, subj, data, tok)
}

// request sends one request under a client span "request <subj>".
func request(ctx context.Context, nc *nats.Conn, subj string, data []byte, tok string) (_ *nats.Msg, err error) {
	ctx, span := startSpan(ctx, trace.SpanKindClient, "request", subj)
	defer func() { failSpan(span, err); span.End() }()
	reply, err := nc.RequestMsgWithContext(ctx, buildMsg(ctx, subj, data, tok))
	if err != nil {
		return nil, fmt.Errorf("natsauth: request %s: %w", subj, err)
	}
	if err := replyError(subj, reply); err != nil {
		var se *ServiceError
		if errors.As(err, &se) {
			span.SetAttributes(attrErrorCode.Int(se.Code))
		}
		return reply, err
	}
	return reply, nil
}

// publish sends a JetStream message under a producer span "publish <subj>"
// (a child of ctx's span, or of the trace ContinueTrace stored): a consumer's
// span is a child of it.
func publish(ctx context.Context, js jetstream.JetStream, subj string, data []byte, tok, msgID string) (_ *jetstream.PubAck, err error) {
	ctx, opts := producerContext(ctx)
	ctx, span := startSpan(ctx, trace.SpanKindProducer, "publish", subj, opts...)
	if span.IsRecording() {
		span.SetAttributes(eventType(msgID))
	}
	defer func() { failSpan(span, err); span.End() }()
	msg := buildMsg(ctx, subj, data, tok)
	msg.Header.Set(HeaderMsgID, msgID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("natsauth: publish %s: %w", subj, err)
	}
	if span.IsRecording() {
		var buf [3]attribute.KeyValue
		attrs := append(buf[:0], attrStream.String(ack.Stream), attrStreamSeq.Int64(int64(ack.Sequence)))
		if ack.Duplicate {
			attrs = append(attrs, attrDuplicate.Bool(true))
		}
		authz.SetSpanAttributes(span, attrs)
	}
	return ack, nil
}

// ServiceError is an error answer from a micro endpoint.
type ServiceError struct {
	Subject     string
	Code        int    // the Nats-Service-Error-Code (401, 403, 503, 500, ...)
	Description string // the Nats-Service-Error text
	// AuthCode is the authz failure code of a 401/403/503 from a natsauth
	// service (keys_unavailable for its temporarily_unavailable; "" for
	// other errors).
	AuthCode authz.Code
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("natsauth: %s answered %d: %s", e.Subject, e.Code, e.Description)
}

// Unwrap exposes an authz failure as an *authz.Error, so that
// errors.Is(err, authz.ErrInsufficientScope) and authz.CodeOf(err) work.
func (e *ServiceError) Unwrap() error {
	if e.AuthCode == "" {
		return nil
	}
	_, desc, _ := strings.Cut(e.Description, ": ")
	return &authz.Error{Code: e.AuthCode, Description: desc}
}

func replyError(subj string, reply *nats.Msg) error {
	if reply.Header == nil {
		return nil
	}
	codeStr := reply.Header.Get(micro.ErrorCodeHeader)
	desc := reply.Header.Get(micro.ErrorHeader)
	if codeStr == "" && desc == "" {
		return nil
	}
	code, err := strconv.Atoi(codeStr)
	if err != nil {
		code = 500
	}
	se := &ServiceError{Subject: subj, Code: code, Description: desc}
	// A denial's description starts with authz.AnswerOf's body error
	// (temporarily_unavailable for keys_unavailable; the Transaction Token
	// Service writes keys_unavailable itself). Only refusals of the
	// message's token are read back: the DPoP codes concern an HTTP
	// request's proof, and the Transaction Token Service's invalid_request
	// is a bug of its caller, not an authorization failure.
	prefix, _, _ := strings.Cut(desc, ": ")
	switch ac := authz.CodeOfAnswer(prefix); ac {
	case authz.CodeMissingToken, authz.CodeInvalidToken, authz.CodeInsufficientScope,
		authz.CodeKeysUnavailable, authz.CodeNoPolicy:
		se.AuthCode = ac
	}
	return se
}
