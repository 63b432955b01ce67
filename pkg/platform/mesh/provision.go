package mesh

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Settings every event stream gets (dead-letter streams get
// natsauth.EnsureDeadLetterStream's).
const (
	// EventsMaxAge keeps events well beyond the oldest backlog a consumer
	// accepts (natsauth.DefaultMaxBacklogAge), for replays and audits.
	EventsMaxAge = 30 * 24 * time.Hour
	// EventsDuplicates is the window in which a republished Nats-Msg-Id (an
	// outbox relay's retry) is dropped; later duplicates reach consumers,
	// which are idempotent.
	EventsDuplicates = 10 * time.Minute
)

// Provision creates or updates, idempotently, the streams owner owns with
// the mesh's settings (events: EventsMaxAge and EventsDuplicates; dead
// letters: natsauth.EnsureDeadLetterStream's), then the durables its
// readers bind to (ProvisionDurables). Buckets are the owner's to create.
func Provision(ctx context.Context, js jetstream.JetStream, owner string, replicas int) error {
	w, ok := Lookup(owner)
	if !ok {
		return fmt.Errorf("mesh: no workload %q", owner)
	}
	replicas = max(replicas, 1)
	for _, s := range w.Streams {
		if !s.Events {
			if err := natsauth.EnsureDeadLetterStream(ctx, js, s.Name, strings.TrimSuffix(s.Subjects[0], ".>"), replicas); err != nil {
				return err
			}
			continue
		}
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        s.Name,
			Description: w.Name + " events",
			Subjects:    s.Subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      EventsMaxAge,
			Duplicates:  EventsDuplicates,
		})
		if err != nil {
			return fmt.Errorf("stream %s: %w", s.Name, err)
		}
	}
	return ProvisionDurables(ctx, js, owner)
}

// ProvisionDurables creates or updates, on the streams owner owns, the
// durable consumers its readers bind to (Workload.Provisions), with the
// table's settings. The owner calls it after creating its streams.
func ProvisionDurables(ctx context.Context, js jetstream.JetStream, owner string) error {
	w, ok := Lookup(owner)
	if !ok {
		return fmt.Errorf("mesh: no workload %q", owner)
	}
	for _, d := range w.Provisions() {
		if err := natsauth.ProvisionConsumer(ctx, js, d.ConsumerConfig()); err != nil {
			return err
		}
	}
	return nil
}

// Bind returns cfg, reader's consumer of cfg.Stream, in bind mode with the
// table's durable name, filter and delivery settings, which the stream's
// owner provisions (ProvisionDurables), and the hop scopes (Hops) an event's
// transaction token must hold. cfg keeps its policies, workers, dead-letter
// prefix and observability.
func Bind(reader string, cfg natsauth.ConsumerConfig) (natsauth.ConsumerConfig, error) {
	d, ok := DurableOf(reader, cfg.Stream)
	if !ok {
		return cfg, fmt.Errorf("mesh: %s reads no durable on %s", reader, cfg.Stream)
	}
	if cfg.Durable != "" && cfg.Durable != d.Name {
		return cfg, fmt.Errorf("mesh: %s's durable on %s is %s, not %s", reader, cfg.Stream, d.Name, cfg.Durable)
	}
	t := d.ConsumerConfig()
	cfg.Durable, cfg.FilterSubjects = t.Durable, t.FilterSubjects
	cfg.MaxDeliver, cfg.AckWait, cfg.BackOff = t.MaxDeliver, t.AckWait, t.BackOff
	cfg.Bind = true
	cfg.Scopes = HopScopes
	return cfg, nil
}
