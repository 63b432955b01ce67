package ports

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/callout"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// NewCallout returns the responder to nats-server's auth callout, on the
// TTS's own connection: the workloads' client-credentials tokens and
// people's access tokens, with the validator (revocations included) the
// exchange uses. Start it once NATS answers.
func NewCallout(a *platform.App) (*callout.Callout, error) {
	cfg := a.Config
	clients := map[string]string{}
	for _, w := range mesh.Workloads {
		if !w.AnswersCallout {
			clients[cfg.PeerClientID(w.Name)] = w.Name
		}
	}
	// Workloads' tokens are checked without the revocation list while it
	// loads: its bucket is the users service's, which connects through
	// this callout (see callout.Config.Workloads).
	workloads, err := authz.NewValidator(a.Keys, authz.WithIssuers(cfg.Auth0.Issuers...),
		authz.WithAudiences(cfg.Auth0.Audience), authz.WithMetrics(a.AuthzMetrics))
	if err != nil {
		return nil, fmt.Errorf("tts: workload validator: %w", err)
	}
	return callout.New(callout.Config{Conn: a.NATS, Validator: a.Validator, Workloads: workloads,
		Clients: clients, Keys: cfg.Callout, Logger: a.Logger, Registry: a.Registry})
}

// Kicker closes a revoked person's NATS connections on every server,
// through the TTS's system user: hand Revoked to the revocation watcher and
// run Run.
type Kicker struct {
	sys   *nats.Conn
	log   *slog.Logger
	kicks chan string
}

// NewKicker returns a Kicker kicking through sys, the TTS's system
// connection.
func NewKicker(sys *nats.Conn, log *slog.Logger) *Kicker {
	return &Kicker{sys: sys, log: log, kicks: make(chan string, 256)}
}

// Revoked queues the kick of sub's connections; it never blocks the
// revocation watcher.
func (k *Kicker) Revoked(sub string) {
	select {
	case k.kicks <- sub:
	default:
		k.log.Warn("nats kick queue full; the connection stays until its token expires", slog.String("sub_hash", platform.SubjectHash(sub)))
	}
}

// Run kicks the queued subjects' connections until ctx ends.
func (k *Kicker) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case sub := <-k.kicks:
			kctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := callout.Kick(kctx, k.sys, sub)
			cancel()
			if err != nil {
				k.log.Warn("nats kick", slog.String("sub_hash", platform.SubjectHash(sub)), slog.String("error", err.Error()))
			} else if n > 0 {
				k.log.Info("revoked person's nats connections closed", slog.String("sub_hash", platform.SubjectHash(sub)), slog.Int("connections", n))
			}
		}
	}
}
