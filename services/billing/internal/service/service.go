// Package service wires billing together: platform, JetStream, use cases,
// HTTP and NATS ports, the orders consumer and the outbox relay.
package service

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/billing/internal/adapters"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
	"github.com/authmesh/authmesh/services/billing/internal/ports"
)

// Run runs billing until ctx ends.
func Run(ctx context.Context, cfg platform.Config, opts platform.Options) error {
	opts.Errors = append(opts.Errors, ports.Errors...)
	a, err := platform.New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	return wire(a).Run(ctx)
}

// wire adds billing to a. Streams and the bucket are created in the
// background, retried until NATS answers, with readiness reporting them.
func wire(a *platform.App) *platform.App {
	m := newMetrics(a.Registry)
	lazy := &lazyStore{ready: make(chan struct{})}
	var consumer atomic.Pointer[natsauth.Consumer]
	svc := app.New(lazy, lazy, m, nil)
	ports.RegisterHTTP(a, svc)
	ordersClient := a.Config.PeerClientID("orders")
	a.DeclarePolicy("NATS endpoint "+ports.VoidSubject, ports.PolicyVoid(ordersClient))
	a.DeclarePolicy("consumer "+adapters.OrdersDurable, adapters.OrdersPolicy(ordersClient))
	a.DeclarePolicy("consumer "+adapters.OrdersDurable+" (on behalf)", adapters.OrdersOnBehalfPolicy(ordersClient))
	a.AddReadyCheck("billing-store", lazy.Ready)
	a.AddReadyCheck("orders-consumer", func(context.Context) error {
		c := consumer.Load()
		if c == nil {
			return errors.New("not started")
		}
		return c.Ready()
	})

	a.Go("billing", func(ctx context.Context) error {
		for {
			k, err := adapters.Setup(ctx, a.JetStream, a.Config.NATSReplicas)
			if err == nil {
				lazy.set(adapters.NewStore(k), adapters.NewOutbox(k, a.JetStream, a.Tokens, a.Logger))
				break
			}
			a.Logger.Warn("billing streams not set up yet; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		nm, err := natsauth.NewMetrics(a.Registry)
		if err != nil {
			return err
		}
		micro, err := natsauth.NewService(a.NATS, micro.Config{Name: "billing", Version: "1.0.0", Description: "billing: voids invoices for cancelled orders"},
			a.TxnValidator, natsauth.WithMetrics(nm), natsauth.WithContext(ctx), natsauth.WithLogger(a.Logger))
		if err != nil {
			return err
		}
		defer func() { _ = micro.Stop() }()
		if err := ports.RegisterNATS(micro, svc, ordersClient, a.Logger); err != nil {
			return err
		}
		ordersJS, err := a.OwnerJetStream(adapters.OrdersStream)
		if err != nil {
			return err
		}
		cons, err := adapters.NewOrdersConsumer(ordersJS, a.TxnValidator, nm, svc, ordersClient, a.Logger)
		if err != nil {
			return err
		}
		consumer.Store(cons)
		m.watchLag(a, lazy.outbox)
		errc := make(chan error, 2)
		go func() { errc <- lazy.outbox.Run(ctx) }()
		go func() { errc <- cons.Run(ctx) }()
		<-ctx.Done()
		<-errc
		<-errc
		return nil
	})
	return a
}

// lazyStore lets the routes exist before the bucket does (NATS may come up
// after billing); until then every call is "unavailable" and /readyz is 503.
type lazyStore struct {
	store  *adapters.Store
	outbox *adapters.Outbox
	ready  chan struct{} // closed once store and outbox are set
}

func (l *lazyStore) set(s *adapters.Store, o *adapters.Outbox) {
	l.store, l.outbox = s, o
	close(l.ready)
}

var errNotReady = fmt.Errorf("billing store not ready: %w", context.DeadlineExceeded)

func (l *lazyStore) wait(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	default:
		return errNotReady
	}
}

func (l *lazyStore) Ready(ctx context.Context) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	if err := l.store.Ready(ctx); err != nil {
		return err
	}
	return l.outbox.Ready(ctx)
}

func (l *lazyStore) Get(ctx context.Context, id string) (app.Versioned, error) {
	if err := l.wait(ctx); err != nil {
		return app.Versioned{}, err
	}
	return l.store.Get(ctx, id)
}

func (l *lazyStore) Create(ctx context.Context, inv domain.Invoice) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	return l.store.Create(ctx, inv)
}

func (l *lazyStore) Update(ctx context.Context, inv domain.Invoice, rev uint64, evs ...app.Event) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	return l.store.Update(ctx, inv, rev, evs...)
}

func (l *lazyStore) List(ctx context.Context, f app.Filter) ([]domain.Invoice, error) {
	if err := l.wait(ctx); err != nil {
		return nil, err
	}
	return l.store.List(ctx, f)
}

func (l *lazyStore) Flush(ctx context.Context, orderID string) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	return l.outbox.Flush(ctx, orderID)
}

// metrics are billing's own figures.
type metrics struct {
	reg         prometheus.Registerer
	transitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{reg: reg, transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "billing_invoice_transitions_total", Help: "Invoices reaching a status.",
	}, []string{"status"})}
	reg.MustRegister(m.transitions)
	return m
}

func (m *metrics) Transition(to domain.Status) { m.transitions.WithLabelValues(string(to)).Inc() }

// watchLag exports the orders consumer's backlog and the outbox's.
func (m *metrics) watchLag(a *platform.App, o *adapters.Outbox) {
	info := func(f func(pending, ackPending uint64) float64) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			js, err := a.OwnerJetStream(adapters.OrdersStream)
			if err != nil {
				return -1
			}
			c, err := js.Consumer(ctx, adapters.OrdersStream, adapters.OrdersDurable)
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
	)
}
