package natsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
)

// Verifier verifies the transaction tokens NATS messages carry:
// *authz.TxnValidator. Validate checks a live request, ValidateAt an event
// as of the time JetStream stored it.
type Verifier interface {
	Validate(ctx context.Context, token string) (*authz.Claims, error)
	ValidateAt(ctx context.Context, token string, at time.Time) (*authz.Claims, error)
}

// Handler serves an authorized request. ctx carries the verified claims and
// transaction token (authz.ClaimsFromContext / authz.TokenFromContext), the
// request id and the trace context, so Request and Publish calls made with it
// forward the caller's transaction.
type Handler func(ctx context.Context, req micro.Request)

// Service wraps a micro.Service whose endpoints all declare a policy.
type Service struct {
	svc     micro.Service
	name    string
	v       Verifier
	ctx     context.Context
	metrics *Metrics
	log     *slog.Logger
}

// ServiceOption configures a Service.
type ServiceOption func(*Service) error

// WithMetrics records every decision in m.
func WithMetrics(m *Metrics) ServiceOption {
	return nonNilOption("metrics", m, func(s *Service) **Metrics { return &s.metrics })
}

// WithLogger logs a handler that panicked (endpoint and panic value; never
// the request's token or data). The caller gets a 500 either way.
func WithLogger(l *slog.Logger) ServiceOption {
	return nonNilOption("logger", l, func(s *Service) **slog.Logger { return &s.log })
}

// WithContext sets the context handlers' contexts derive from (default
// context.Background()); cancel it to tell running handlers to give up.
func WithContext(ctx context.Context) ServiceOption {
	return nonNilOption("context", ctx, func(s *Service) *context.Context { return &s.ctx })
}

// nonNilOption sets the field picks to v, refusing a nil v.
func nonNilOption[T comparable](what string, v T, field func(*Service) *T) ServiceOption {
	return func(s *Service) error {
		var none T
		if v == none {
			return fmt.Errorf("nil %s", what)
		}
		*field(s) = v
		return nil
	}
}

// NewService starts a micro service (micro.AddService) whose endpoints are
// authorized by v.
//
//	svc, err := natsauth.NewService(nc, micro.Config{Name: "users", Version: "1.0.0"}, validator,
//		natsauth.WithMetrics(m))
//	err = svc.AddEndpoint("profile", "authmesh.users.profile", authz.RequireAll("read:profile").Users(),
//		func(ctx context.Context, req micro.Request) {
//			claims, _ := authz.ClaimsFromContext(ctx)
//			_ = req.RespondJSON(profiles[claims.Subject])
//		})
func NewService(nc *nats.Conn, cfg micro.Config, v Verifier, opts ...ServiceOption) (*Service, error) {
	s := &Service{name: cfg.Name, v: v, ctx: context.Background()}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, fmt.Errorf("natsauth: service option: %w", err)
		}
	}
	if nc == nil || v == nil {
		return nil, errors.New("natsauth: service needs a connection and a verifier")
	}
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsauth: service %q: %w", cfg.Name, err)
	}
	s.svc = svc
	return s, nil
}

// AddEndpoint registers an endpoint on subject ("" = name) that runs h only for
// callers policy admits. A zero (undeclared) policy is refused, and so is
// one that is not public and admits neither users nor named clients: every
// endpoint must say who may call it, deny by default. The policy's names are published
// in the endpoint metadata (authmesh.policy) for discovery.
func (s *Service) AddEndpoint(name, subject string, policy authz.Policy, h Handler, opts ...micro.EndpointOpt) error {
	if !policy.Declared() {
		return fmt.Errorf("natsauth: endpoint %q: %w", name, authz.ErrNoPolicy)
	}
	if !policy.SaysWho() {
		return fmt.Errorf("natsauth: endpoint %q: %w", name, authz.ErrPolicyWithoutWho)
	}
	if h == nil {
		return fmt.Errorf("natsauth: endpoint %q: nil handler", name)
	}
	meta := map[string]string{"authmesh.policy": strings.Join(policy.Names(), " ")}
	if policy.IsPublic() {
		meta["authmesh.policy"] = "public"
	}
	all := []micro.EndpointOpt{micro.WithEndpointMetadata(meta)}
	if subject != "" {
		all = append(all, micro.WithEndpointSubject(subject))
	}
	all = append(all, opts...)
	return s.svc.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) {
		s.serve(name, policy, h, req)
	}), all...)
}

// serve runs one request under a server span "process <subject>", a child
// of the caller's client span, annotated with the authorization decision.
func (s *Service) serve(endpoint string, policy authz.Policy, h Handler, req micro.Request) {
	hdr := nats.Header(req.Headers())
	ctx, req, span := StartServerSpan(s.ctx, req, endpoint)
	defer span.End()
	// micro runs handlers on the connection's goroutine without a recover: a
	// panicking handler would take the whole service down.
	defer func() {
		if r := recover(); r != nil {
			s.count(endpoint, "error", "panic")
			if s.log != nil {
				s.log.ErrorContext(ctx, "nats endpoint handler panicked", "service", s.name, "endpoint", endpoint, "panic", fmt.Sprint(r))
			}
			_ = req.Error("500", "internal error", nil)
		}
	}()
	if _, ok := hdr[HeaderAuthorization]; ok && policy.IsPublic() {
		// Even where no token is needed, a sender handing out an access
		// token over NATS is told so, loudly, rather than served.
		s.count(endpoint, "denied", errAccessTokenOnNATS.Reason)
		authz.RecordDecision(ctx, policy, nil, errAccessTokenOnNATS)
		status, desc := denial(errAccessTokenOnNATS, "")
		_ = req.Error(status, desc, nil)
		return
	}
	if policy.IsPublic() {
		s.count(endpoint, "allowed", "public")
		authz.RecordDecision(ctx, policy, nil, nil)
		h(ctx, req)
		return
	}
	tok, err := tokenFromHeader(hdr)
	var claims *authz.Claims
	if err == nil {
		claims, err = s.v.Validate(ctx, tok)
		if err == nil && claims.Event != nil {
			err = errEventTokenOnRequest
		}
		if err == nil {
			err = policy.Authorize(claims)
		}
		if err == nil {
			s.count(endpoint, "allowed", "ok")
			authz.RecordDecision(ctx, policy, claims, nil)
			h(authz.WithClaims(ctx, claims, tok), req)
			return
		}
	}
	authz.RecordDecision(ctx, policy, claims, err)
	status, desc := denial(err, tok)
	s.count(endpoint, "denied", reasonOf(err))
	_ = req.Error(status, desc, nil)
}

// errEventTokenOnRequest: a transaction token bound to one event
// (authz.EventBinding) authorizes publishing that event, never a request.
var errEventTokenOnRequest = &authz.Error{Code: authz.CodeInvalidToken, Reason: "event_token",
	Description: "the transaction token is bound to an event"}

// StartServerSpan starts the server span of a micro request, "process
// <subject>": a child of the trace context in its headers (any case), under
// base with the request id of its headers. Service's endpoints have it by
// themselves; an endpoint answered outside Service (the Transaction Token
// Service's exchange) starts it here, records its decision with
// authz.RecordDecision on ctx, answers through the returned request (its
// error code lands on the span, a 5xx as Error status) and ends the span.
func StartServerSpan(base context.Context, req micro.Request, endpoint string) (context.Context, micro.Request, trace.Span) {
	ctx, span := startSpan(ContextFromHeaders(base, nats.Header(req.Headers())), trace.SpanKindServer, "process", req.Subject())
	if span.IsRecording() {
		span.SetAttributes(attrEndpoint.String(endpoint))
		req = tracedRequest{Request: req, span: span}
	}
	return ctx, req, span
}

// tracedRequest records the error a handler answers with on the server
// span: the code always, Error status for a 5xx.
type tracedRequest struct {
	micro.Request
	span trace.Span
}

func (r tracedRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	n, err := strconv.Atoi(code)
	if err == nil {
		r.span.SetAttributes(attrErrorCode.Int(n))
	}
	if err != nil || n >= 500 {
		r.span.SetStatus(codes.Error, truncate(description, 200))
	}
	return r.Request.Error(code, description, data, opts...)
}

func (s *Service) count(endpoint, result, reason string) {
	if s.metrics != nil {
		s.metrics.requests.WithLabelValues(s.name, endpoint, result, reason).Inc()
	}
}

// Micro returns the underlying micro.Service (Info, Stats, groups).
func (s *Service) Micro() micro.Service { return s.svc }

// Stop drains the endpoints.
func (s *Service) Stop() error { return s.svc.Stop() }

var errAccessTokenOnNATS = &authz.Error{
	Code:        authz.CodeInvalidToken,
	Reason:      "access_token_on_nats",
	Description: "NATS carries transaction tokens (Txn-Token), never access tokens (Authorization)",
}

// errMissingTxnToken is authz.ErrMissingToken saying which token NATS wants.
var errMissingTxnToken = &authz.Error{
	Code:        authz.CodeMissingToken,
	Description: "a transaction token (Txn-Token) is required",
}

var errMalformedTxnHeader = &authz.Error{
	Code:        authz.CodeInvalidToken,
	Reason:      "malformed_header",
	Description: "Txn-Token must hold exactly one token",
}

// tokenFromHeader returns the message's transaction token. A message that
// carries an access token is refused even if it also has a transaction
// token: whoever sent it is handing out a replayable credential.
func tokenFromHeader(h nats.Header) (string, error) {
	if _, ok := h[HeaderAuthorization]; ok {
		return "", errAccessTokenOnNATS
	}
	vals := h.Values(HeaderTxnToken)
	switch {
	case len(vals) == 0 || (len(vals) == 1 && vals[0] == ""):
		return "", errMissingTxnToken
	case len(vals) > 1 || strings.ContainsAny(vals[0], " \t,"):
		return "", errMalformedTxnHeader
	}
	return vals[0], nil
}

// denial is the micro error answering an authorization failure, derived
// from authz.AnswerOf, the answer the same failure gets over HTTP: its status
// as the code, "<body error>: <body message>" as the description (ServiceError
// and authz.CodeOfAnswer read the code back). The token is never echoed.
func denial(err error, tok string) (status, desc string) {
	a := authz.AnswerOf(err)
	msg := a.Body.Message
	if tok != "" {
		msg = strings.ReplaceAll(msg, tok, "[token]")
	}
	return strconv.Itoa(a.Status), a.Body.Error + ": " + msg
}

func reasonOf(err error) string {
	var e *authz.Error
	if errors.As(err, &e) {
		if e.Reason != "" {
			return e.Reason
		}
		return string(e.Code)
	}
	if err != nil {
		return "internal_error"
	}
	return "ok"
}
