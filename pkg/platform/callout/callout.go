// Package callout is the NATS auth callout of the mesh: nats-server hands it
// every connection that is not the callout's own, and it answers with a NATS
// user derived from the Auth0 access token the client presented at CONNECT.
//
//   - A workload's client-credentials token (azp = its client id) becomes a
//     user of the workload's account with exactly the allow lists
//     pkg/platform/mesh derives for it, over standard connections only.
//   - A person's token becomes a user of the LIVE account that may subscribe
//     to their own live feeds (those their permissions admit), publish
//     nothing, over WebSocket only.
//
// The user expires with the token. Anything else (no token, a garbage,
// expired, revoked or wrong-audience token, an unknown client, a
// transaction token) is refused with the reason in the log, never the token.
// Kick closes a revoked person's connections on every server.
package callout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// DefaultTimeout bounds one decision: nats-server waits 2 s (its
// authorization timeout) for the answer, and so does the client's connect.
const DefaultTimeout = 1500 * time.Millisecond

// queue spreads callout requests over the replicas answering them.
const queue = "authmesh-callout"

// personSubs caps a person's subscriptions (two feeds and some slack).
const personSubs = 16

// DPoP at CONNECT. A DPoP-bound access token (cnf.jkt) is not a bearer
// token, at NATS no more than at an HTTP edge: the client proves its key by
// a DPoP proof in CONNECT's sig field (nats-server then hands the callout
// the connection's nonce too), with htm ProofMethod, htu ProofURI,
// ath the token's hash and nonce the server's INFO nonce, which is fresh for
// every connection, so a proof is good for one CONNECT only. ProofURI is
// under .invalid (RFC 2606): no HTTP edge serves it, so the proof is good
// nowhere else either.
const (
	ProofMethod = "CONNECT"
	ProofURI    = "https://nats.invalid/connect"
)

// Validator verifies an Auth0 access token (authz.Validator).
type Validator interface {
	Validate(ctx context.Context, token string) (*authz.Claims, error)
}

// Config configures the callout.
type Config struct {
	Conn      *nats.Conn // a connection of the callout's own user (mesh.CalloutWorkload)
	Validator Validator  // Auth0 access tokens, revocations included
	// Workloads, optional, verifies workloads' client-credentials tokens
	// while Validator cannot because its revocation list is not loaded
	// yet: the list's bucket belongs to the users service, which connects
	// through this callout, so on a fresh system nothing would ever load
	// it. Revocations block people, never a workload (a retired client is
	// refused its tokens by the tenant), so Workloads holds the same keys,
	// issuer and audience without revocations; a person's token is still
	// refused until the list is loaded.
	Workloads Validator
	// Clients maps each workload's M2M client id to the workload's name
	// (mesh.Users ...). A client id not in it is refused.
	Clients map[string]string
	Keys    mesh.Keys // the issuer and xkey seeds are used
	Timeout time.Duration
	Logger  *slog.Logger
	// Registry takes the decision metrics (nil: not registered).
	Registry prometheus.Registerer
}

// Callout answers nats-server's authorization requests.
type Callout struct {
	cfg     Config
	dpop    *authz.DPoP
	issuer  nkeys.KeyPair
	xkey    nkeys.KeyPair
	sub     *nats.Subscription
	results *prometheus.CounterVec
	latency prometheus.Histogram
}

// New checks cfg and derives the keys.
func New(cfg Config) (*Callout, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("callout: no NATS connection")
	case cfg.Validator == nil:
		return nil, errors.New("callout: no validator")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	issuer, err := nkeys.FromSeed([]byte(cfg.Keys.Issuer))
	if err != nil {
		return nil, fmt.Errorf("callout: issuer seed: %w", err)
	}
	xkey, err := nkeys.FromCurveSeed([]byte(cfg.Keys.XKey))
	if err != nil {
		return nil, fmt.Errorf("callout: xkey seed: %w", err)
	}
	for id, name := range cfg.Clients {
		w, ok := mesh.Lookup(name)
		if !ok || w.AnswersCallout {
			return nil, fmt.Errorf("callout: client %q maps to %q, not a workload connecting through the callout", id, name)
		}
	}
	dp, err := authz.NewDPoP(authz.DPoPConfig{Replay: authz.NewMemoryReplayCache()})
	if err != nil {
		return nil, fmt.Errorf("callout: dpop: %w", err)
	}
	c := &Callout{
		cfg: cfg, issuer: issuer, xkey: xkey, dpop: dp,
		results: metric.CounterVec("nats_callout_decisions_total",
			"NATS connections the auth callout decided, by kind (workload, person, unknown), result and reason.",
			"kind", "result", "reason"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nats_callout_seconds",
			Help:    "Time to answer one NATS authorization request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
		}),
	}
	if cfg.Registry != nil {
		if err := metric.Register(cfg.Registry, c.results, c.latency); err != nil {
			return nil, fmt.Errorf("callout: metrics: %w", err)
		}
	}
	return c, nil
}

// Start subscribes to the servers' requests; called again (a retried
// set-up step) it only waits for the subscription to reach the server.
func (c *Callout) Start() error {
	if c.sub == nil {
		sub, err := c.cfg.Conn.QueueSubscribe(mesh.CalloutSubject, queue, c.serve)
		if err != nil {
			return fmt.Errorf("callout: subscribe: %w", err)
		}
		c.sub = sub
	}
	if err := c.cfg.Conn.Flush(); err != nil {
		return fmt.Errorf("callout: subscribe: %w", err)
	}
	return nil
}

// Stop unsubscribes; connections already authorized stay up.
func (c *Callout) Stop() {
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}

// refusal is a refused connection: reason is logged and counted; the
// client sees only "Authorization Violation".
type refusal struct{ kind, reason string }

func (r *refusal) Error() string { return r.reason }

// serve answers one request. A request that cannot be read gets no answer
// (the server times out and refuses the connection).
func (c *Callout) serve(m *nats.Msg) {
	start := time.Now()
	defer func() { c.latency.Observe(time.Since(start).Seconds()) }()
	serverXKey := m.Header.Get("Nats-Server-Xkey")
	if serverXKey == "" {
		// The servers are configured with our xkey: an unsealed request is
		// not from them.
		c.count("unknown", "refused", "unsealed_request")
		c.cfg.Logger.Warn("nats callout: unsealed request ignored")
		return
	}
	data, err := c.xkey.Open(m.Data, serverXKey)
	if err != nil {
		c.count("unknown", "refused", "unreadable_request")
		c.cfg.Logger.Warn("nats callout: request does not open with the xkey")
		return
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		c.count("unknown", "refused", "bad_request")
		c.cfg.Logger.Warn("nats callout: request claims", slog.String("error", err.Error()))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	uc, err := c.Decide(ctx, req)
	res := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	res.Audience = req.Server.ID
	if err != nil {
		var r *refusal
		if !errors.As(err, &r) {
			r = &refusal{kind: "unknown", reason: "internal"}
		}
		c.count(r.kind, "refused", r.reason)
		c.cfg.Logger.Warn("nats connection refused", slog.String("reason", r.reason), slog.String("kind", r.kind),
			slog.String("client_type", req.ClientInformation.Type), slog.String("host", req.ClientInformation.Host),
			slog.Uint64("cid", req.ClientInformation.ID), slog.String("server", req.Server.Name))
		res.Error = "authorization refused: " + r.reason
	} else {
		res.Jwt, err = uc.Encode(c.issuer)
		if err != nil {
			c.count("unknown", "refused", "internal")
			c.cfg.Logger.Error("nats callout: encode user", slog.String("error", err.Error()))
			return
		}
		kind := "person"
		if uc.Audience != mesh.LiveAccount {
			kind = "workload"
		}
		c.count(kind, "allowed", "ok")
		c.cfg.Logger.Debug("nats connection authorized", slog.String("account", uc.Audience),
			slog.String("name", logName(kind, uc.Name)), slog.Uint64("cid", req.ClientInformation.ID))
	}
	tok, err := res.Encode(c.issuer)
	if err != nil {
		c.cfg.Logger.Error("nats callout: encode response", slog.String("error", err.Error()))
		return
	}
	sealed, err := c.xkey.Seal([]byte(tok), req.Server.XKey)
	if err != nil {
		c.cfg.Logger.Error("nats callout: seal response", slog.String("error", err.Error()))
		return
	}
	_ = m.Respond(sealed)
}

func (c *Callout) count(kind, result, reason string) {
	c.results.WithLabelValues(kind, result, reason).Inc()
}

// logName keeps people's subjects out of the log (a hash), workloads by name.
func logName(kind, name string) string {
	if kind == "workload" {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "sub:" + hex.EncodeToString(sum[:8])
}

// Decide maps the request's CONNECT token to a NATS user, or refuses.
func (c *Callout) Decide(ctx context.Context, req *jwt.AuthorizationRequestClaims) (*jwt.UserClaims, error) {
	tok := req.ConnectOptions.Token
	if tok == "" {
		return nil, &refusal{"unknown", "no_token"}
	}
	claims, err := c.cfg.Validator.Validate(ctx, tok)
	if err != nil && c.cfg.Workloads != nil && refusalReason(err) == revocationsUnavailable {
		if wc, werr := c.cfg.Workloads.Validate(ctx, tok); werr == nil && wc.IsM2M() {
			claims, err = wc, nil
		}
	}
	if err != nil {
		return nil, &refusal{"unknown", refusalReason(err)}
	}
	if claims.JKT != "" {
		if err := c.proveKey(ctx, req, tok, claims.JKT); err != nil {
			return nil, err
		}
	}
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Expires = claims.ExpiresAt.Unix()
	wsConn := strings.EqualFold(req.ClientInformation.Type, jwt.ConnectionTypeWebsocket)
	if claims.IsM2M() {
		name, ok := c.cfg.Clients[claims.Client()]
		if !ok {
			return nil, &refusal{"workload", "unknown_client"}
		}
		if wsConn {
			return nil, &refusal{"workload", "websocket_for_workload"}
		}
		w, _ := mesh.Lookup(name)
		p := w.Permissions()
		uc.Name, uc.Audience = w.Name, w.Account
		uc.Pub.Allow.Add(p.Publish...)
		uc.Sub.Allow.Add(p.Subscribe...)
		if p.Responses {
			uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
		}
		uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeStandard)
		return uc, nil
	}
	if !wsConn {
		return nil, &refusal{"person", "person_not_on_websocket"}
	}
	p := mesh.PersonPermissions(claims.Subject, claims.Permissions)
	uc.Name, uc.Audience = claims.Subject, mesh.LiveAccount
	uc.Pub.Deny.Add(">")
	if len(p.Subscribe) == 0 {
		uc.Sub.Deny.Add(">")
	}
	uc.Sub.Allow.Add(p.Subscribe...)
	uc.Limits.Subs = personSubs
	uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeWebsocket)
	return uc, nil
}

// proveKey checks the DPoP proof a bound token's CONNECT carries (see
// ProofMethod). The replay cache is this process's: the nonce already binds
// the proof to one connection of one server.
func (c *Callout) proveKey(ctx context.Context, req *jwt.AuthorizationRequestClaims, tok, jkt string) error {
	proof := req.ConnectOptions.SignedNonce
	if proof == "" {
		return &refusal{"unknown", "dpop_proof_missing"}
	}
	if req.ClientInformation.Nonce == "" {
		return &refusal{"unknown", "dpop_no_server_nonce"}
	}
	_, err := c.dpop.Verify(ctx, proof, authz.ProofCheck{Method: ProofMethod, URI: ProofURI,
		AccessToken: tok, JKT: jkt, Nonce: req.ClientInformation.Nonce})
	if err != nil {
		return &refusal{"unknown", "dpop_" + refusalReason(err)}
	}
	return nil
}

// revocationsUnavailable is authz's reason while the revocation list loads.
const revocationsUnavailable = "revocations_unavailable"

// refusalReason is the logged reason of a validation error: authz's reason,
// else its code.
func refusalReason(err error) string {
	var e *authz.Error
	if !errors.As(err, &e) {
		return "invalid_token"
	}
	if e.Reason != "" {
		return e.Reason
	}
	return string(e.Code)
}

// NKey is the connect option of an nkey user (the callout's own users,
// mesh.Keys.Service and mesh.Keys.System): the seed signs the server's nonce.
func NKey(seed string) (nats.Option, error) {
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return nil, fmt.Errorf("callout: nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("callout: nkey seed: %w", err)
	}
	return nats.Nkey(pub, kp.Sign), nil
}
