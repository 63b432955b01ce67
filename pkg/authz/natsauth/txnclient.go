package natsauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
)

// DefaultTxnSubject is where the Transaction Token Service answers token
// exchanges.
const DefaultTxnSubject = "authmesh.tts.exchange"

// Exchanger turns a subject token (a caller's access token, or the service's
// own M2M token) into a transaction token narrowed to scopes. TxnClient is
// the implementation; tests may substitute their own.
type Exchanger interface {
	Exchange(ctx context.Context, subjectToken string, scopes []string) (string, error)
	// ExchangeEvent returns a token bound to one event (see
	// authz.EventBinding) and its expiry. Each event has its own: nothing
	// is cached.
	ExchangeEvent(ctx context.Context, subjectToken string, scopes []string, ev authz.EventBinding) (string, time.Time, error)
}

// Outbound says how messages sent under a context get their transaction
// tokens: who exchanges, and which scopes each subject's receivers check.
type Outbound struct {
	Exchanger Exchanger
	// Scopes returns the scopes a message on subject may carry; the
	// Transaction Token Service grants those the subject token holds. A
	// subject it returns nothing for gets no token exchanged (deny by
	// default: the send fails).
	Scopes func(subject string) []string
}

// WithOutbound returns a context whose outgoing messages get transaction
// tokens from o. pkg/platform puts it in every service's base context, so
// handlers need not know about it.
func WithOutbound(ctx context.Context, o *Outbound) context.Context {
	return context.WithValue(ctx, outboundKey, o)
}

// ErrTxnUnavailable reports that no transaction token could be had because the
// Transaction Token Service did not answer: the caller should retry later
// (HTTP 503 with Retry-After, never 401 or 500).
var ErrTxnUnavailable = &authz.Error{Code: authz.CodeKeysUnavailable, Reason: "tts_unavailable",
	Description: "the transaction token service is unavailable, retry later"}

// txnUnavailable is ErrTxnUnavailable with its cause and a reason for logs
// and metrics.
func txnUnavailable(reason string, cause error) *authz.Error {
	return &authz.Error{Code: ErrTxnUnavailable.Code, Reason: reason, Description: ErrTxnUnavailable.Description, Err: cause}
}

func exchange(ctx context.Context, subjectToken, subj string) (string, error) {
	o, scopes, err := outbound(ctx, subj)
	if err != nil {
		return "", err
	}
	return o.Exchanger.Exchange(ctx, subjectToken, scopes)
}

// exchangeEvent exchanges subjectToken for a token bound to the event whose
// payload goes on subj.
func exchangeEvent(ctx context.Context, subjectToken, subj string, payload []byte) (string, time.Time, error) {
	o, scopes, err := outbound(ctx, subj)
	if err != nil {
		return "", time.Time{}, err
	}
	return o.Exchanger.ExchangeEvent(ctx, subjectToken, scopes, authz.NewEventBinding(subj, payload))
}

// outbound returns ctx's Outbound and the scopes a message on subj carries.
func outbound(ctx context.Context, subj string) (*Outbound, []string, error) {
	o, ok := ctx.Value(outboundKey).(*Outbound)
	if !ok || o == nil || o.Exchanger == nil {
		return nil, nil, errors.New("natsauth: no transaction token service configured (WithOutbound)")
	}
	var scopes []string
	if o.Scopes != nil {
		scopes = o.Scopes(subj)
	}
	if len(scopes) == 0 {
		return nil, nil, fmt.Errorf("natsauth: no scopes declared for subject %q: nothing may be sent there", subj)
	}
	return o, scopes, nil
}

// forget drops what the context's exchanger cached for subjectToken.
func forget(ctx context.Context, subjectToken string) {
	if o, ok := ctx.Value(outboundKey).(*Outbound); ok && o != nil {
		if f, ok := o.Exchanger.(interface{ Forget(string) }); ok {
			f.Forget(subjectToken)
		}
	}
}

// errActorRefused: the Transaction Token Service refused the requesting
// service's own token (RFC 6749's invalid_client).
var errActorRefused = errors.New("natsauth: the transaction token service refused this service's own token")

// TxnClientConfig configures a TxnClient.
type TxnClientConfig struct {
	Conn *nats.Conn // Required.
	// Actor is the requesting service's own M2M token source: the
	// Transaction Token Service takes the workload (req_wl) from it. Required.
	Actor m2m.TokenSource
	// Subject defaults to DefaultTxnSubject; TrustDomain to
	// authz.DefaultTrustDomain.
	Subject, TrustDomain string
	// Timeout bounds one exchange (default 2 s).
	Timeout time.Duration
	// Margin is how long before its expiry a cached transaction token is
	// replaced (default 60 s): a message must reach its receiver while the
	// token is still good.
	Margin time.Duration
	// CacheSize bounds the cached tokens (default 10000).
	CacheSize int
}

// TxnClient exchanges tokens with the Transaction Token Service over NATS
// request-reply (RFC 8693 fields as JSON). Tokens are cached per (subject
// token, scope set) until Margin before they expire, and concurrent
// exchanges of one key share one request (singleflight): a steady load pays
// a map lookup, not a round trip.
type TxnClient struct {
	cfg TxnClientConfig
	sf  singleflight.Group

	mu    sync.Mutex
	cache map[txnKey]cachedTxn
	now   func() time.Time
}

// txnKey identifies a cached token: the subject token's SHA-256 (the token
// itself is not kept) and the sorted scopes.
type txnKey struct {
	subject [sha256.Size]byte
	scopes  string
}

type cachedTxn struct {
	token   string
	renewAt time.Time
}

// NewTxnClient validates cfg.
func NewTxnClient(cfg TxnClientConfig) (*TxnClient, error) {
	if cfg.Conn == nil || cfg.Actor == nil {
		return nil, errors.New("natsauth: transaction token client needs a connection and an actor token source")
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultTxnSubject
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = authz.DefaultTrustDomain
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Margin <= 0 {
		cfg.Margin = time.Minute
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	return &TxnClient{cfg: cfg, cache: make(map[txnKey]cachedTxn), now: time.Now}, nil
}

// TxnRequest is the exchange request (RFC 8693 §2.1 fields, as JSON).
type TxnRequest struct {
	GrantType          string          `json:"grant_type"`
	RequestedTokenType string          `json:"requested_token_type"`
	Audience           string          `json:"audience"`
	Scope              string          `json:"scope"`
	SubjectToken       string          `json:"subject_token"`
	SubjectTokenType   string          `json:"subject_token_type"`
	ActorToken         string          `json:"actor_token"`
	ActorTokenType     string          `json:"actor_token_type"`
	RequestDetails     json.RawMessage `json:"request_details,omitempty"`
}

// TxnRequestDetails is the request_details of an exchange natsauth sends:
// with a DPoP-bound subject token (cnf.jkt), sent from the request whose
// proof the Echo middleware verified,
//
//	{"dpop_proof": "<the compact JWS of the request's DPoP header>", "dpop_jkt": "<its key's thumbprint>"}
//
// and, for a token bound to one event (ExchangeEvent),
//
//	{"event": {"subject": "orders.events.created", "sha256": "<base64url SHA-256 of the payload>"}}
//
// next to them.
type TxnRequestDetails struct {
	// DPoPProof is the DPoP proof (RFC 9449) the requesting workload
	// verified on the HTTP request that carried subject_token. The
	// Transaction Token Service exchanges a DPoP-bound subject token only
	// with one: signed by the key of the token's cnf.jkt, with ath the
	// token's hash, issued within the last minute, and not forwarded by
	// another workload before. A thumbprint alone proves nothing (it is in
	// the token); the proof shows the key holder's live request.
	DPoPProof string `json:"dpop_proof,omitempty"`
	// DPoPJKT is the thumbprint of the proof's key. The Transaction Token
	// Service takes the key from the proof; when DPoPJKT is there it must
	// match too. It is sent so that a Transaction Token Service predating
	// dpop_proof still serves during a rolling upgrade.
	DPoPJKT string `json:"dpop_jkt,omitempty"`
	// Event asks for a token bound to one event (its tctx.evt): it may
	// live longer than a transaction (authz.MaxEventTxnLifetime), since it
	// waits in the publisher's outbox, and carries that event only.
	Event *authz.EventBinding `json:"event,omitempty"`
}

// TxnResponse is the exchange answer (RFC 8693 §2.2.1; token_type "N_A").
type TxnResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
}

// Exchange returns a transaction token for subjectToken narrowed to scopes
// (the service grants those the token holds and the workload may ask for).
func (c *TxnClient) Exchange(ctx context.Context, subjectToken string, scopes []string) (string, error) {
	if !slices.IsSorted(scopes) {
		scopes = slices.Sorted(slices.Values(scopes))
	}
	key := txnKey{subject: sha256.Sum256(unsafe.Slice(unsafe.StringData(subjectToken), len(subjectToken)))}
	if len(scopes) == 1 {
		key.scopes = scopes[0]
	} else {
		key.scopes = strings.Join(scopes, " ")
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	if ok && now.Before(e.renewAt) {
		return e.token, nil
	}
	v, err, _ := c.sf.Do(string(key.subject[:])+key.scopes, func() (any, error) {
		tok, exp, err := c.exchange(ctx, subjectToken, scopes, nil)
		if err != nil {
			return "", err
		}
		c.put(key, cachedTxn{token: tok, renewAt: exp.Add(-c.cfg.Margin)})
		return tok, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// ExchangeEvent returns a transaction token for subjectToken narrowed to
// scopes and bound to one event, and its expiry. It is asked for while the
// request that caused the event is served (a DPoP-bound token's proof goes
// with it, as for Exchange), and is not cached.
func (c *TxnClient) ExchangeEvent(ctx context.Context, subjectToken string, scopes []string, ev authz.EventBinding) (string, time.Time, error) {
	return c.exchange(ctx, subjectToken, scopes, &ev)
}

// exchange asks the Transaction Token Service once, and once more with a
// new actor token when it refused the service's own.
func (c *TxnClient) exchange(ctx context.Context, subjectToken string, scopes []string, ev *authz.EventBinding) (string, time.Time, error) {
	var d TxnRequestDetails
	if jkt, ok := authz.DPoPVerifiedFromContext(ctx); ok {
		if t, _ := authz.TokenFromContext(ctx); t == subjectToken {
			// The proof the edge verified for this request: the TTS
			// checks it itself (key, ath, iat) before it issues.
			d.DPoPProof, _ = authz.DPoPProofFromContext(ctx)
			d.DPoPJKT = jkt
		}
	}
	d.Event = ev
	var details json.RawMessage
	if d != (TxnRequestDetails{}) {
		details, _ = json.Marshal(d)
	}
	tok, exp, err := c.request(ctx, subjectToken, scopes, details)
	if errors.Is(err, errActorRefused) {
		// The service's own token died (its signing key was revoked,
		// say): drop it and try once more with a new one.
		if inv, ok := c.cfg.Actor.(m2m.Invalidator); ok {
			if actor, aerr := c.cfg.Actor.Token(ctx); aerr == nil {
				inv.Invalidate(actor)
			}
			tok, exp, err = c.request(ctx, subjectToken, scopes, details)
		}
	}
	if errors.Is(err, errActorRefused) {
		// Not the caller's fault and not theirs to fix: unavailable.
		return "", time.Time{}, txnUnavailable("actor_refused", err)
	}
	return tok, exp, err
}

// Forget drops every cached token exchanged for subjectToken.
func (c *TxnClient) Forget(subjectToken string) {
	sum := sha256.Sum256([]byte(subjectToken))
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.cache {
		if k.subject == sum {
			delete(c.cache, k)
		}
	}
}

func (c *TxnClient) put(key txnKey, e cachedTxn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cache) >= c.cfg.CacheSize {
		now := c.now()
		for k, old := range c.cache {
			if !now.Before(old.renewAt) {
				delete(c.cache, k)
			}
		}
		// Still full: drop arbitrary entries (map order is random); they
		// are re-exchanged on their next use.
		for k := range c.cache {
			if len(c.cache) < c.cfg.CacheSize {
				break
			}
			delete(c.cache, k)
		}
	}
	c.cache[key] = e
}

func (c *TxnClient) request(ctx context.Context, subjectToken string, scopes []string, details json.RawMessage) (_ string, _ time.Time, err error) {
	actor, err := c.cfg.Actor.Token(ctx)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("natsauth: transaction token: service token: %w", err)
	}
	body, err := json.Marshal(TxnRequest{
		GrantType:          authz.GrantTypeTokenExchange,
		RequestedTokenType: authz.TokenTypeTxn,
		Audience:           c.cfg.TrustDomain,
		Scope:              strings.Join(scopes, " "),
		SubjectToken:       subjectToken,
		SubjectTokenType:   authz.TokenTypeAccess,
		ActorToken:         actor,
		ActorTokenType:     authz.TokenTypeAccess,
		RequestDetails:     details,
	})
	if err != nil {
		return "", time.Time{}, err
	}
	msg := nats.NewMsg(c.cfg.Subject)
	msg.Data = body
	msg.Header.Set(HeaderRequestID, outgoingRequestID(ctx))
	// Detached from the caller's cancellation: singleflight shares this
	// request with every caller of the same key.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	defer cancel()
	rctx, span := startSpan(rctx, trace.SpanKindClient, "request", c.cfg.Subject)
	defer func() { failSpan(span, err); span.End() }()
	injectTrace(rctx, msg.Header)
	reply, err := c.cfg.Conn.RequestMsgWithContext(rctx, msg)
	if err != nil {
		// No responders, a timeout, a closed connection: the service is
		// not there for now.
		return "", time.Time{}, txnUnavailable(ErrTxnUnavailable.Reason, err)
	}
	if err := replyError(c.cfg.Subject, reply); err != nil {
		var se *ServiceError
		if errors.As(err, &se) && strings.HasPrefix(se.Description, "invalid_client:") {
			return "", time.Time{}, fmt.Errorf("%w: %w", errActorRefused, err)
		}
		// The service's own failures, overload included (503
		// temporarily_unavailable), are it being unavailable; only its
		// keys_unavailable says it cannot verify the subject token now.
		if errors.As(err, &se) && se.Code >= 500 && !strings.HasPrefix(se.Description, string(authz.CodeKeysUnavailable)+":") {
			return "", time.Time{}, txnUnavailable(ErrTxnUnavailable.Reason, err)
		}
		return "", time.Time{}, err
	}
	var r TxnResponse
	if err := json.Unmarshal(reply.Data, &r); err != nil || r.AccessToken == "" || r.ExpiresIn <= 0 {
		return "", time.Time{}, errors.New("natsauth: transaction token service answered something that is not a token")
	}
	return r.AccessToken, c.now().Add(time.Duration(r.ExpiresIn) * time.Second), nil
}
