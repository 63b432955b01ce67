// Package service composes the orders service: platform runtime, adapters,
// use cases, HTTP routes, event consumers and the outbox relay.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/orders/internal/adapters"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/ports"
)

// Name is the service's name (config prefix ORDERS_).
const Name = mesh.Orders

// Tuning of the background loops; tests shorten them.
type Tuning struct {
	RelayEvery   time.Duration // outbox relay period (default 5 s)
	RelayGrace   time.Duration // see app.Deps.RelayGrace (default 5 s)
	MetricsEvery time.Duration // consumer lag poll period (default 10 s)
}

// Run is the orders service's run function for platform.Main.
func Run(ctx context.Context, cfg platform.Config) error {
	return RunWith(ctx, cfg, platform.Options{}, Tuning{})
}

// RunWith is Run with explicit platform options and tuning.
func RunWith(ctx context.Context, cfg platform.Config, opts platform.Options, tun Tuning) error {
	if tun.RelayEvery <= 0 {
		tun.RelayEvery = 5 * time.Second
	}
	if tun.MetricsEvery <= 0 {
		tun.MetricsEvery = 10 * time.Second
	}
	opts.Errors = append(ports.ErrorMappings(), opts.Errors...)
	opts.CORSAllowHeaders = append(opts.CORSAllowHeaders, ports.HeaderIdempotencyKey)
	return platform.Boot(ctx, cfg, opts, func(a *platform.App) error { return wire(a, tun) })
}

// wire adds the orders service to a. The buckets and streams are a set-up
// step; the consumers and the outbox relay start once it succeeded.
func wire(a *platform.App, tun Tuning) error {
	cfg := a.Config
	m, err := newMetrics(a.Registry)
	if err != nil {
		return err
	}
	natsMetrics, err := natsauth.NewMetrics(a.Registry)
	if err != nil {
		return fmt.Errorf("natsauth metrics: %w", err)
	}

	ordersBucket := platform.NewLazyBucket(adapters.OrdersBucket)
	idemBucket := platform.NewLazyBucket(adapters.IdempotencyBucket)
	store := adapters.NewOrderStore(ordersBucket)
	svc, err := app.New(app.Deps{
		Orders: store, Outbox: store,
		Idempotency: adapters.NewIdempotencyStore(idemBucket),
		Publisher:   adapters.NewEventPublisher(a.JetStream),
		Profiles:    adapters.NewProfileClient(a.NATS),
		Billing:     adapters.NewBillingClient(a.NATS),
		Identity:    adapters.NewServiceIdentity(a.Tokens, cfg.ClientID),
		Live:        adapters.LiveUpdates{Live: a.Live()},
		Logger:      a.Logger,
		RelayGrace:  tun.RelayGrace,
	})
	if err != nil {
		return err
	}
	ports.RegisterHTTP(a, svc)

	billingCfg := ports.BillingConsumerConfig(a.Config.PeerClientID("billing"), natsMetrics, a.Logger)
	usersCfg := ports.UsersConsumerConfig(a.Config.PeerClientID("users"), natsMetrics, a.Logger)
	for _, cc := range []natsauth.ConsumerConfig{billingCfg, usersCfg} {
		a.DeclarePolicy("consumer "+cc.Durable, cc.Policy)
		a.DeclarePolicy("consumer "+cc.Durable+" (on behalf)", cc.OnBehalfPolicy)
	}
	// Billing and users provision these durables on their streams; orders
	// binds to them through their accounts' exported API (pkg/platform/mesh).
	billingConsumer, err := bindConsumer(a, billingCfg, ports.BillingHandler(svc, a.Logger))
	if err != nil {
		return err
	}
	usersConsumer, err := bindConsumer(a, usersCfg, ports.UsersHandler(svc, a.Logger))
	if err != nil {
		return err
	}

	a.AddReadyCheck(ports.BillingDurable, func(context.Context) error { return billingConsumer.Ready() })
	a.AddReadyCheck(ports.UsersDurable, func(context.Context) error { return usersConsumer.Ready() })
	a.SetUp("orders-storage", func(ctx context.Context) error {
		// ORDERS_EVENTS, ORDERS_DLQ and the durables others read from them.
		if err := mesh.Provision(ctx, a.JetStream, Name, cfg.NATSReplicas); err != nil {
			return err
		}
		o, i, err := adapters.EnsureBuckets(ctx, a.JetStream, cfg.NATSReplicas)
		if err != nil {
			return err
		}
		ordersBucket.Set(o)
		idemBucket.Set(i)
		return nil
	})
	a.Go(ports.BillingDurable, billingConsumer.Run)
	a.Go(ports.UsersDurable, usersConsumer.Run)
	a.Go("outbox-relay", func(ctx context.Context) error {
		return relayLoop(ctx, svc, store, m, tun.RelayEvery, a.Logger)
	})
	a.Go("consumer-lag", func(ctx context.Context) error {
		return lagLoop(ctx, a, m, tun.MetricsEvery)
	})
	return nil
}

// bindConsumer binds cfg's consumer, which the stream's owner provisions.
func bindConsumer(a *platform.App, cfg natsauth.ConsumerConfig, h natsauth.EventHandler) (*natsauth.Consumer, error) {
	cfg, err := mesh.Bind(Name, cfg)
	if err != nil {
		return nil, err
	}
	js, err := a.OwnerJetStream(cfg.Stream)
	if err != nil {
		return nil, err
	}
	return natsauth.NewConsumer(js, a.TxnValidator, cfg, h)
}

// relayLoop publishes what the outbox holds, once at start (events a crashed
// predecessor owed) and then periodically.
func relayLoop(ctx context.Context, svc *app.Service, ob app.Outbox, m *metrics, every time.Duration, log *slog.Logger) error {
	relay := func(ctx context.Context) {
		n, err := svc.RelayOutbox(ctx)
		m.relayed.Add(float64(n))
		if err != nil && ctx.Err() == nil {
			m.relayErrors.Inc()
			log.Warn("outbox relay", slog.String("error", err.Error()))
		}
		if pending, err := ob.List(ctx); err == nil {
			m.outboxPending.Set(float64(len(pending)))
		}
	}
	relay(ctx)
	platform.Every(ctx, every, relay)
	return nil
}

// lagLoop exports the durable consumers' backlog, at start and then
// periodically.
func lagLoop(ctx context.Context, a *platform.App, m *metrics, every time.Duration) error {
	type durable struct {
		js              jetstream.JetStream
		stream, durable string
	}
	var ds []durable
	for _, c := range []struct{ stream, durable string }{
		{ports.BillingStream, ports.BillingDurable}, {ports.UsersStream, ports.UsersDurable},
	} {
		js, err := a.OwnerJetStream(c.stream)
		if err != nil {
			return err
		}
		ds = append(ds, durable{js, c.stream, c.durable})
	}
	measure := func(ctx context.Context) {
		for _, d := range ds {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			cons, err := d.js.Consumer(cctx, d.stream, d.durable)
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = cons.Info(cctx)
			}
			cancel()
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					m.lagErrors.WithLabelValues(d.durable).Inc()
				}
				continue
			}
			m.pending.WithLabelValues(d.durable).Set(float64(info.NumPending))
			m.ackPending.WithLabelValues(d.durable).Set(float64(info.NumAckPending))
			m.redelivered.WithLabelValues(d.durable).Set(float64(info.NumRedelivered))
		}
	}
	measure(ctx)
	platform.Every(ctx, every, measure)
	return nil
}

type metrics struct {
	outboxPending prometheus.Gauge
	relayed       prometheus.Counter
	relayErrors   prometheus.Counter
	pending       *prometheus.GaugeVec
	ackPending    *prometheus.GaugeVec
	redelivered   *prometheus.GaugeVec
	lagErrors     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		outboxPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "orders_outbox_pending",
			Help: "Events stored in the outbox and not yet published."}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "orders_outbox_relayed_total",
			Help: "Events published by the outbox relay (their request could not publish them)."}),
		relayErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "orders_outbox_relay_errors_total",
			Help: "Outbox relay passes that ended with an error."}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orders_consumer_pending_messages",
			Help: "Messages in the stream not yet delivered to the durable consumer (lag)."}, []string{"consumer"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orders_consumer_ack_pending_messages",
			Help: "Messages delivered to the durable consumer and not yet acknowledged."}, []string{"consumer"}),
		redelivered: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "orders_consumer_redelivered_messages",
			Help: "Messages the durable consumer is redelivering."}, []string{"consumer"}),
		lagErrors: metric.CounterVec("orders_consumer_info_errors_total",
			"Failures reading a durable consumer's state.", "consumer"),
	}
	if err := metric.Register(reg, m.outboxPending, m.relayed, m.relayErrors, m.pending, m.ackPending, m.redelivered, m.lagErrors); err != nil {
		return nil, fmt.Errorf("orders metrics: %w", err)
	}
	return m, nil
}
