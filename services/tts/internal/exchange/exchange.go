// Package exchange is the Transaction Token Service's one job: turn an
// inbound access token, presented by a workload that proves who it is with
// its own client-credentials token, into a short-lived transaction token
// narrowed to what the workload may ask for and the caller's token holds
// (draft-ietf-oauth-transaction-tokens-10, RFC 8693 request fields).
package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// DefaultLifetime is a transaction token's lifetime: minutes, above the
// p99 of a call chain, far below an access token's day.
const DefaultLifetime = 5 * time.Minute

// DefaultEventLifetime is the lifetime of a token bound to one event
// (request_details.event): the longest an outbox may hold the event through
// an outage of NATS before its relay must settle the change another way.
// It is not cut to the subject token's expiry: the token attests one event
// the caller caused while their token was good, and carries nothing else.
const DefaultEventLifetime = authz.MaxEventTxnLifetime

// Verifier verifies Auth0 access tokens (*authz.Validator): signature,
// issuer, audience, expiry and revocation.
type Verifier interface {
	Validate(ctx context.Context, token string) (*authz.Claims, error)
}

// Signer signs a transaction token payload (the key set's current key).
type Signer interface {
	Sign(payload []byte) (string, error)
}

// Config configures an Exchanger.
type Config struct {
	Verifier Verifier
	Signer   func() Signer // the current signer (keys reload)
	// Workloads maps a requesting workload's client id (the actor token's
	// azp) to the scopes it may ask for. A client not listed gets nothing.
	Workloads map[string][]string
	// Subjects maps a workload's client id to the subjects it publishes
	// events on: a token bound to an event (request_details.event) is issued
	// only for one of them, and narrowed to SubjectScopes of that subject
	// (the scopes its consumers check).
	Subjects      map[string][]string
	SubjectScopes func(subject string) []string
	EventLifetime time.Duration // default DefaultEventLifetime, at most authz.MaxEventTxnLifetime
	Issuer        string        // default authz.DefaultTxnIssuer
	TrustDomain   string        // default authz.DefaultTrustDomain
	Lifetime      time.Duration
	// ProofMaxAge and ProofFutureSkew bound the iat of the DPoP proof a
	// DPoP-bound subject token must come with (defaults DefaultProofMaxAge
	// and DefaultProofFutureSkew); ProofUses bounds how many proofs are
	// remembered at once (default DefaultProofUses). See checkProof.
	ProofMaxAge, ProofFutureSkew time.Duration
	ProofUses                    int
	Now                          func() time.Time
}

// Exchanger issues transaction tokens.
type Exchanger struct {
	cfg    Config
	proofs *authz.ForwardedProofVerifier
	uses   *proofUses
}

// New validates cfg.
func New(cfg Config) (*Exchanger, error) {
	if cfg.Verifier == nil || cfg.Signer == nil || len(cfg.Workloads) == 0 {
		return nil, errors.New("exchange: a verifier, a signer and the workloads are required")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = authz.DefaultTxnIssuer
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = authz.DefaultTrustDomain
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.EventLifetime <= 0 {
		cfg.EventLifetime = DefaultEventLifetime
	}
	if cfg.Lifetime > authz.MaxTxnLifetime || cfg.EventLifetime > authz.MaxEventTxnLifetime {
		return nil, fmt.Errorf("exchange: lifetimes above %v (%v for event tokens) would be refused by every receiver", authz.MaxTxnLifetime, authz.MaxEventTxnLifetime)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProofUses <= 0 {
		cfg.ProofUses = DefaultProofUses
	}
	// Zero ProofMaxAge and ProofFutureSkew take the verifier's defaults,
	// which DefaultProofMaxAge and DefaultProofFutureSkew name.
	proofs, err := authz.NewForwardedProofVerifier(authz.ForwardedProofConfig{
		MaxAge: cfg.ProofMaxAge, FutureSkew: cfg.ProofFutureSkew, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("exchange: DPoP proofs: %w", err)
	}
	return &Exchanger{cfg: cfg, proofs: proofs, uses: newProofUses(cfg.ProofUses)}, nil
}

// Error is a refused exchange. Status is the micro error code (400, 401,
// 403); Code the OAuth or authz code that prefixes the description
// ("invalid_request", "invalid_token", "insufficient_scope"...), which
// natsauth maps back to an authz error on the caller's side; Reason is for
// logs and metrics.
type Error struct {
	Status      int
	Code        string
	Reason      string
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func badRequest(reason, desc string) *Error {
	return &Error{Status: 400, Code: "invalid_request", Reason: reason, Description: desc}
}

// Result is an issued token with what the log may say about it.
type Result struct {
	natsauth.TxnResponse
	Workload string        // req_wl
	Claims   *authz.Claims // the subject token's, for the caller's trace and log (hashed sub only)
}

// Exchange checks req and issues a transaction token. requestID becomes the
// token's txn when it is a valid request id (natsauth.AcceptRequestID, else a
// fresh one), so logs of every hop share it.
func (x *Exchanger) Exchange(ctx context.Context, req natsauth.TxnRequest, requestID string) (*Result, error) {
	switch {
	case req.GrantType != authz.GrantTypeTokenExchange:
		return nil, &Error{Status: 400, Code: "unsupported_grant_type", Reason: "grant_type", Description: "grant_type must be token-exchange"}
	case req.RequestedTokenType != authz.TokenTypeTxn:
		return nil, badRequest("requested_token_type", "requested_token_type must be the txn_token type")
	case req.Audience != x.cfg.TrustDomain:
		return nil, &Error{Status: 400, Code: "invalid_target", Reason: "audience", Description: "the audience is not this trust domain"}
	case req.SubjectToken == "" || req.SubjectTokenType != authz.TokenTypeAccess:
		return nil, badRequest("subject_token", "an access token is required as subject_token")
	case req.ActorToken == "" || req.ActorTokenType != authz.TokenTypeAccess:
		return nil, badRequest("actor_token", "the requesting workload's access token is required as actor_token")
	case len(req.RequestDetails) > maxRequestDetailsBytes:
		return nil, badRequest("request_details", "request_details is too large")
	}
	var details natsauth.TxnRequestDetails
	if len(req.RequestDetails) > 0 && json.Unmarshal(req.RequestDetails, &details) != nil {
		return nil, badRequest("request_details", "request_details is not a JSON object of the known fields")
	}
	if details.Event != nil && !details.Event.Valid() {
		return nil, badRequest("event", "request_details.event needs a subject and the payload's SHA-256 (base64url)")
	}
	requested := strings.Fields(req.Scope)
	if len(requested) == 0 {
		return nil, &Error{Status: 400, Code: "invalid_scope", Reason: "no_scope", Description: "scope is required"}
	}

	// The requesting workload proves itself with its own client-credentials
	// token: a workload that does not hold its client secret cannot ask.
	actor, err := x.cfg.Verifier.Validate(ctx, req.ActorToken)
	if err != nil {
		return nil, authError(err, "actor_")
	}
	if !actor.IsM2M() {
		return nil, &Error{Status: 403, Code: string(authz.CodeInsufficientScope), Reason: "actor_not_workload", Description: "the actor token is not a workload's client-credentials token"}
	}
	allowed, ok := x.cfg.Workloads[actor.Client()]
	if !ok {
		return nil, &Error{Status: 403, Code: string(authz.CodeInsufficientScope), Reason: "unknown_workload", Description: "this client may not request transaction tokens"}
	}

	// The caller's token: verified exactly as the HTTP edge does, revocation
	// included (a user blocked since the edge accepted the request gets
	// nothing more).
	subj, err := x.cfg.Verifier.Validate(ctx, req.SubjectToken)
	if err != nil {
		return nil, authError(err, "subject_")
	}
	if subj.JKT != "" {
		// A DPoP-bound token (RFC 9449) is good only with a proof for one
		// HTTP request. This service is not a resource server the token is
		// used at — it never accepts the token as a credential of its
		// caller, which is the actor token — so the binding is honoured by
		// demanding the proof of the live request the workload serves
		// (checkProof) and by issuing a transaction token, never the bound
		// token, onward.
		if err := x.checkProof(details, req.SubjectToken, subj.JKT, actor.Client()); err != nil {
			return nil, err
		}
	}
	held := subj.Permissions
	if subj.IsM2M() {
		// A workload may start a transaction as itself, never as another.
		if subj.Client() != actor.Client() {
			return nil, &Error{Status: 403, Code: string(authz.CodeInsufficientScope), Reason: "foreign_client", Description: "a workload may act only as itself"}
		}
		held = subj.Scopes.List()
	}
	if ev := details.Event; ev != nil {
		// One event, which the workload publishes, narrowed to what its
		// consumers check.
		if !slices.Contains(x.cfg.Subjects[actor.Client()], ev.Subject) {
			return nil, &Error{Status: 403, Code: string(authz.CodeInsufficientScope), Reason: "event_subject", Description: "this client does not publish events on the event's subject"}
		}
		if x.cfg.SubjectScopes != nil {
			hop := x.cfg.SubjectScopes(ev.Subject)
			allowed = slices.DeleteFunc(slices.Clone(allowed), func(s string) bool { return !slices.Contains(hop, s) })
		}
	}
	var granted []string
	for _, s := range requested {
		if slices.Contains(allowed, s) && slices.Contains(held, s) && !slices.Contains(granted, s) {
			granted = append(granted, s)
		}
	}
	if len(granted) == 0 {
		return nil, &Error{Status: 403, Code: string(authz.CodeInsufficientScope), Reason: "no_scope_granted", Description: "neither the caller's token nor the workload allows any requested scope"}
	}
	slices.Sort(granted)

	now := x.cfg.Now()
	exp := now.Add(x.cfg.Lifetime)
	if details.Event != nil {
		exp = now.Add(x.cfg.EventLifetime) // it may wait in an outbox (see DefaultEventLifetime)
	} else if subj.ExpiresAt.Before(exp) {
		exp = subj.ExpiresAt // never outlive the token it stands for
	}
	// The organization travels with the identity: a hop scopes data to
	// the org the caller's token was issued for, as the edge did.
	tctx, err := json.Marshal(authz.TxnContext{AZP: subj.Client(), OrgID: subj.OrgID, OrgName: subj.OrgName, Event: details.Event})
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(authz.TxnClaims{
		Issuer: x.cfg.Issuer, Audience: x.cfg.TrustDomain,
		IssuedAt: now.Unix(), ExpiresAt: exp.Unix(),
		Txn: natsauth.AcceptRequestID(requestID), Subject: subj.Subject, Scope: strings.Join(granted, " "),
		ReqWL: actor.Client(), TCtx: tctx,
	})
	if err != nil {
		return nil, err
	}
	tok, err := x.cfg.Signer().Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	return &Result{
		TxnResponse: natsauth.TxnResponse{
			AccessToken: tok, IssuedTokenType: authz.TokenTypeTxn, TokenType: "N_A",
			ExpiresIn: max(int64(exp.Sub(now).Seconds()), 1), Scope: strings.Join(granted, " "),
		},
		Workload: actor.Client(), Claims: subj,
	}, nil
}

func authError(err error, prefix string) *Error {
	var ae *authz.Error
	if !errors.As(err, &ae) {
		return &Error{Status: 500, Code: "server_error", Reason: prefix + "verify_error", Description: "the token could not be verified"}
	}
	reason := ae.Reason
	if reason == "" {
		reason = string(ae.Code)
	}
	switch ae.Code {
	case authz.CodeKeysUnavailable:
		return &Error{Status: 503, Code: string(ae.Code), Reason: prefix + reason, Description: "signing keys are unavailable, retry later"}
	case authz.CodeMissingToken, authz.CodeInvalidToken:
		if prefix == "actor_" {
			// The workload's own credential: RFC 6749's invalid_client, so
			// the client renews it rather than blaming its caller.
			return &Error{Status: 401, Code: "invalid_client", Reason: prefix + reason, Description: "the actor token is not valid"}
		}
		return &Error{Status: 401, Code: string(authz.CodeInvalidToken), Reason: prefix + reason, Description: "the subject token is not valid"}
	}
	return &Error{Status: 403, Code: string(ae.Code), Reason: prefix + reason, Description: "the token was refused"}
}
