package platform

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz/m2m"
)

// How often natsToken asks the token source for the current token: often
// enough to reconnect well before a token expires (the source renews at 80 %
// of its lifetime), and quickly while there is none yet. Variables so that
// tests can use tokens living seconds; each natsToken copies them when made.
var (
	natsTokenCheck   = 15 * time.Second
	natsTokenPending = 500 * time.Millisecond
)

// natsToken is the client-credentials token a service presents at NATS
// CONNECT. nats.go asks for it under the connection's lock on every
// (re)connect, so get never blocks: keep renews it in the background and
// reconnects with the new one before the old one (and the NATS user the
// callout made of it, which expires with it) runs out.
type natsToken struct {
	src            m2m.TokenSource
	log            *slog.Logger
	check, pending time.Duration // natsTokenCheck, natsTokenPending
	cur            atomic.Pointer[string]
}

func newNATSToken(src m2m.TokenSource, log *slog.Logger) *natsToken {
	return &natsToken{src: src, log: log, check: natsTokenCheck, pending: natsTokenPending}
}

// get is the nats.TokenHandler: the current token ("" before the first).
func (t *natsToken) get() string {
	if p := t.cur.Load(); p != nil {
		return *p
	}
	return ""
}

// refresh asks the source and reports whether the token changed.
func (t *natsToken) refresh(ctx context.Context) bool {
	tok, err := t.src.Token(ctx)
	if err != nil {
		t.log.Warn("nats: no client-credentials token yet", slog.String("error", err.Error()))
		return false
	}
	if tok == t.get() {
		return false
	}
	t.cur.Store(&tok)
	return true
}

// keep renews the token until ctx ends and reconnects nc with each new one.
func (t *natsToken) keep(ctx context.Context, nc *nats.Conn) {
	for {
		wait := t.check
		if t.get() == "" {
			wait = t.pending
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		changed := t.refresh(rctx)
		cancel()
		if changed && nc.IsConnected() {
			t.log.Info("nats: reconnecting with a renewed token")
			if err := nc.ForceReconnect(); err != nil {
				t.log.Warn("nats: reconnect", slog.String("error", err.Error()))
			}
		}
	}
}
