package mesh

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Provision creates or updates, idempotently, the streams owner owns with
// the mesh's settings (natsauth.EnsureStream, the same for events and dead
// letters), then the durables its readers bind to (ProvisionDurables). Buckets are the owner's to create.
func Provision(ctx context.Context, js jetstream.JetStream, owner string, replicas int) error {
	w, ok := Lookup(owner)
	if !ok {
		return fmt.Errorf("mesh: no workload %q", owner)
	}
	for _, s := range w.Streams {
		var err error
		if s.Events {
			err = natsauth.EnsureStream(ctx, js, s.Name, w.Name+" events", s.Subjects, replicas)
		} else {
			err = natsauth.EnsureDeadLetterStream(ctx, js, s.Name, strings.TrimSuffix(s.Subjects[0], ".>"), replicas)
		}
		if err != nil {
			return err
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
