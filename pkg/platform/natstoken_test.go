package platform

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/authztest"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// renewingSource is a client-credentials source whose tokens live a few
// seconds and are renewed once less than half their lifetime is left, as
// m2m.ClientCredentials renews at 80 %. Until ready is closed it has no token
// (the tenant is down).
type renewingSource struct {
	is       *issuer
	client   string
	lifetime time.Duration
	ready    chan struct{}

	mu  sync.Mutex
	tok string
	exp time.Time
}

func (s *renewingSource) Token(ctx context.Context) (string, error) {
	select {
	case <-s.ready:
	default:
		return "", errors.New("tenant down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Until(s.exp) < s.lifetime/2 {
		tok, err := s.is.sign(map[string]any{
			"sub": s.client + "@clients", "azp": s.client, "gty": "client-credentials", "scope": "",
		}, s.lifetime)
		if err != nil {
			return "", err
		}
		// exp is whole seconds: the token dies at the second, not later.
		s.tok, s.exp = tok, time.Now().Add(s.lifetime).Truncate(time.Second)
	}
	return s.tok, nil
}

// seenToken is a token the callout accepted, and when.
type seenToken struct {
	tok string
	at  time.Time
	exp time.Time
	azp string
}

// recordingValidator records every token the callout accepts.
type recordingValidator struct {
	v    *authz.Validator
	mu   sync.Mutex
	seen []seenToken
}

func (r *recordingValidator) Validate(ctx context.Context, tok string) (*authz.Claims, error) {
	c, err := r.v.Validate(ctx, tok)
	if err == nil {
		r.mu.Lock()
		if n := len(r.seen); n == 0 || r.seen[n-1].tok != tok {
			r.seen = append(r.seen, seenToken{tok: tok, at: time.Now(), exp: c.ExpiresAt, azp: c.AZP})
		}
		r.mu.Unlock()
	}
	return c, err
}

func (r *recordingValidator) tokens() []seenToken {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenToken(nil), r.seen...)
}

// TestNATSTokenRenewsBeforeExpiry: a service's NATS connection presents its
// client-credentials token through the callout, connects once the tenant
// answers (not before), and reconnects with each renewed token before the
// old one — and the NATS user the callout made of it — expires, so it never
// loses its connection to an expired user; messages keep flowing.
func TestNATSTokenRenewsBeforeExpiry(t *testing.T) {
	// Not parallel: it shortens the package's token check intervals, which
	// each natsToken copies when it is made.
	defer func(c, p time.Duration) { natsTokenCheck, natsTokenPending = c, p }(natsTokenCheck, natsTokenPending)
	natsTokenCheck, natsTokenPending = 100*time.Millisecond, 50*time.Millisecond

	is := newIssuer(t)
	rec := &recordingValidator{v: is.validator(t)}
	s := meshtest.StartWith(t, meshtest.Options{
		Validator: rec,
		Token:     func(tb testing.TB, workload string) string { return is.m2mToken(tb, workload+"-service") },
	})
	src := &renewingSource{is: is, client: "billing-service", lifetime: 3 * time.Second, ready: make(chan struct{})}
	logs := &authztest.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &App{
		Config:   Config{Service: mesh.Billing, NATSURL: s.ClientURL()},
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
		Registry: prometheus.NewRegistry(),
		Tokens:   src,
		opts:     Options{ShutdownTimeout: time.Second},
		ctx:      ctx,
	}
	if err := a.connectNATS(); err != nil {
		t.Fatal(err)
	}
	defer a.NATS.Close()
	time.Sleep(300 * time.Millisecond)
	if a.NATS.IsConnected() || len(rec.tokens()) != 0 {
		t.Fatal("connected without a client-credentials token")
	}
	close(src.ready)
	authztest.Eventually(t, 5*time.Second, a.NATS.IsConnected, "connected once the tenant answers")

	connectedLogs := len(logs.String())

	// The connection keeps working over the renewals: billing asks
	// JetStream for its account's info (a request and its reply) every
	// 250 ms. A request in flight at the moment of a renewal's reconnect
	// may fail with the connection (as with any reconnect, and callers
	// retry); any other failure, or more than one per renewal, is a bug.
	const over = 7 * time.Second // more than two token lifetimes
	failed := 0
	for deadline := time.Now().Add(over); time.Now().Before(deadline); {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := a.JetStream.AccountInfo(rctx); err != nil {
			failed++
			t.Logf("account info: %v", err)
			if !errors.Is(err, nats.ErrDisconnected) && !strings.Contains(err.Error(), "disconnected") {
				t.Errorf("a request failed with %v, not a reconnect", err)
			}
		}
		rcancel()
		time.Sleep(250 * time.Millisecond)
	}

	seen := rec.tokens()
	if failed > len(seen)-1 {
		t.Errorf("%d requests failed over %d renewals", failed, len(seen)-1)
	}
	if len(seen) < 3 {
		t.Fatalf("the callout saw %d tokens in %v with tokens living %v, want at least 3 (renewals reconnect)", len(seen), over, src.lifetime)
	}
	for i, st := range seen {
		if st.azp != "billing-service" {
			t.Errorf("token %d: azp %q", i, st.azp)
		}
		if i > 0 && !st.at.Before(seen[i-1].exp) {
			t.Errorf("token %d reached the callout at %v, after token %d expired at %v", i, st.at.Format(time.StampMilli), i-1, seen[i-1].exp.Format(time.StampMilli))
		}
	}
	if out := logs.String()[connectedLogs:]; strings.Contains(out, "xpired") || strings.Contains(out, "uthorization") {
		t.Errorf("the connection ran into an expired or refused user:\n%s", out)
	}
	if !a.NATS.IsConnected() {
		t.Error("not connected after the renewals")
	}
	if n := a.NATS.Stats().Reconnects; n < uint64(len(seen)-1) {
		t.Errorf("%d reconnects for %d tokens", n, len(seen))
	}
}

// TestNATSTokenHandlerNeverBlocks: nats.go calls the token handler under
// the connection's lock, so it answers from memory even while the token
// source hangs (a tenant that does not answer).
func TestNATSTokenHandlerNeverBlocks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	src := blockingSource{release: release, tok: "tok-1"}
	nt := &natsToken{src: src, log: slog.New(slog.DiscardHandler), check: time.Millisecond, pending: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go nt.keep(ctx, &nats.Conn{}) // never connected: keep only renews
	for range 5 {
		done := make(chan string, 1)
		go func() { done <- nt.get() }()
		// The handler must not block while the source hangs.
		if tok := authztest.Receive(t, done, 100*time.Millisecond, "the token handler's answer"); tok != "" {
			t.Fatalf("token %q before the source answered", tok)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	authztest.Eventually(t, 2*time.Second, func() bool { return nt.get() == "tok-1" }, "token once the source answers")
}

// blockingSource hangs until release is closed.
type blockingSource struct {
	release chan struct{}
	tok     string
}

func (s blockingSource) Token(ctx context.Context) (string, error) {
	select {
	case <-s.release:
		return s.tok, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
