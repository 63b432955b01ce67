// Package service composes billing: platform runtime, JetStream, use cases,
// HTTP and NATS ports, the orders consumer and the outbox relay.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/services/billing/internal/adapters"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
	"github.com/authmesh/authmesh/services/billing/internal/ports"
)

// Name is the service's name (config prefix BILLING_).
const Name = mesh.Billing

// Run is billing's run function for platform.Main.
func Run(ctx context.Context, cfg platform.Config) error {
	return RunWith(ctx, cfg, platform.Options{})
}

// RunWith is Run with explicit platform options (tests pass a listener and
// a logger).
func RunWith(ctx context.Context, cfg platform.Config, opts platform.Options) error {
	opts.Errors = append(ports.ErrorMappings(), opts.Errors...)
	return platform.Boot(ctx, cfg, opts, wire)
}

// wire adds billing to a. The streams and the bucket are a set-up step; the
// void endpoint, the orders consumer and the outbox relay start once it
// succeeded.
func wire(a *platform.App) error {
	m, err := newMetrics(a.Registry)
	if err != nil {
		return err
	}
	kv := platform.NewLazyBucket(adapters.InvoiceBucket)
	store := adapters.NewStore(kv)
	outbox := adapters.NewOutbox(kv, a.JetStream, a.Tokens, a.Logger)
	svc, err := app.New(app.Deps{
		Store:  store,
		Outbox: outbox,
		OnFlushError: func(err error) {
			// The change is stored with its event; the relay publishes it.
			m.flushErrors.Inc()
			a.Logger.Warn("event left to the outbox relay", slog.String("error", err.Error()))
		},
		Metrics: m,
		Live:    adapters.LiveUpdates{Live: a.Live()},
	})
	if err != nil {
		return err
	}
	ports.RegisterHTTP(a, svc)
	ordersClient := a.Config.PeerClientID("orders")
	a.DeclarePolicy("NATS endpoint "+ports.VoidSubject, ports.PolicyVoid(ordersClient))
	a.DeclarePolicy("consumer "+ports.OrdersDurable, ports.OrdersPolicy(ordersClient))
	a.DeclarePolicy("consumer "+ports.OrdersDurable+" (on behalf)", ports.OrdersOnBehalfPolicy(ordersClient))

	nm, err := natsauth.NewMetrics(a.Registry)
	if err != nil {
		return fmt.Errorf("natsauth metrics: %w", err)
	}
	// The orders service provisions the durable; billing binds to it through
	// the orders account's exported API (pkg/platform/mesh).
	ordersJS, err := a.OwnerJetStream(ports.OrdersStream)
	if err != nil {
		return err
	}
	consumer, err := ports.NewOrdersConsumer(ordersJS, a.TxnValidator, nm, svc, ordersClient, a.Logger)
	if err != nil {
		return err
	}
	a.AddReadyCheck("billing-store", store.Ready)
	a.AddReadyCheck("billing-outbox", outbox.Ready)
	a.AddReadyCheck("orders-consumer", func(context.Context) error { return consumer.Ready() })
	m.watchLag(a, outbox)

	a.SetUp("billing-storage", func(ctx context.Context) error {
		// BILLING_EVENTS, BILLING_DLQ and the durables others read from
		// them (orders-billing).
		if err := mesh.Provision(ctx, a.JetStream, Name, a.Config.NATSReplicas); err != nil {
			return err
		}
		b, err := adapters.EnsureBuckets(ctx, a.JetStream, a.Config.NATSReplicas)
		if err != nil {
			return err
		}
		kv.Set(b)
		return nil
	})
	a.ServeNATS(micro.Config{Name: Name, Version: "1.0.0", Description: "billing: voids invoices for cancelled orders"}, nm,
		func(ms *natsauth.Service) error { return ports.RegisterNATS(ms, svc, ordersClient, a.Logger) })
	a.Go(ports.OrdersDurable, consumer.Run)
	a.Go("outbox-relay", outbox.Run)
	return nil
}

// metrics are billing's own figures.
type metrics struct {
	reg         prometheus.Registerer
	transitions *prometheus.CounterVec
	flushErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reg: reg,
		transitions: metric.CounterVec("billing_invoice_transitions_total", "Invoices reaching a status.", "status"),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "billing_outbox_flush_errors_total", Help: "Events a request could not publish right after its change (the outbox relay publishes them).",
		}),
	}
	if err := metric.Register(reg, m.transitions, m.flushErrors); err != nil {
		return nil, fmt.Errorf("billing metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) Transition(to domain.Status) { m.transitions.WithLabelValues(string(to)).Inc() }

// watchLag exports the orders consumer's backlog and the outbox's.
func (m *metrics) watchLag(a *platform.App, o *adapters.Outbox) {
	info := func(f func(pending, ackPending uint64) float64) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			js, err := a.OwnerJetStream(ports.OrdersStream)
			if err != nil {
				return -1
			}
			c, err := js.Consumer(ctx, ports.OrdersStream, ports.OrdersDurable)
			if err != nil {
				return -1
			}
			ci, err := c.Info(ctx)
			if err != nil {
				return -1
			}
			return f(ci.NumPending, uint64(ci.NumAckPending))
		}
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "billing_orders_consumer_pending", Help: "Order events not yet delivered to billing (-1: unknown)."},
			info(func(p, _ uint64) float64 { return float64(p) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "billing_orders_consumer_ack_pending", Help: "Order events delivered and not yet acknowledged (-1: unknown)."},
			info(func(_, ap uint64) float64 { return float64(ap) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "billing_outbox_pending", Help: "Invoices owing an event to BILLING_EVENTS."},
			func() float64 { return float64(o.Pending()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "billing_outbox_waiting", Help: "Invoices whose event waits for its payer's next request (its sealed token ran out)."},
			func() float64 { return float64(o.Waiting()) }),
	)
}
