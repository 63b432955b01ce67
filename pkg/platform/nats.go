package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform/callout"
)

// InboxPrefix is the reply-subject prefix of a service's NATS connection
// (mesh.Workload.InboxPrefix). Each service has an account of its own, so no
// other service sees its inboxes anyway; the prefix keeps its replies
// recognisable and is the only inbox space its permissions allow.
func InboxPrefix(service string) string { return "_INBOX_" + service }

// connectNATS connects with the service's own identity: its
// client-credentials token, which the auth callout turns into the
// service's NATS user (the Transaction Token Service, which answers the
// callout, with its nkey). The connection retries forever, also for the
// first connect, so the service comes up before NATS, the tenant or the
// callout does and /readyz reports 503 until it is connected.
func (a *App) connectNATS() error {
	log := a.Logger
	creds, err := a.natsCredentials()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(strings.ReplaceAll(a.Config.NATSURL, " ", ""),
		nats.Name(a.Config.Service),
		creds,
		nats.CustomInboxPrefix(InboxPrefix(a.Config.Service)),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// A refused token (the tenant or callout not up yet, a token
		// rotated away) is retried with the next one, not given up on.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(500*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.Timeout(3*time.Second),
		nats.DrainTimeout(a.opts.ShutdownTimeout),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("nats connected", slog.String("server", c.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.String("error", err.Error()))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", slog.String("server", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{slog.String("error", err.Error())}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			log.Error("nats async error", attrs...)
		}),
	)
	if err != nil {
		return fmt.Errorf("platform: nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("platform: jetstream: %w", err)
	}
	a.NATS, a.JetStream = nc, js
	if a.natsToken != nil {
		go a.natsToken.keep(a.ctx, nc)
	}
	return a.registerNATSMetrics()
}

// natsCredentials is how the service authenticates to NATS.
func (a *App) natsCredentials() (nats.Option, error) {
	if a.opts.TokenService {
		return callout.NKey(a.Config.Callout.Service)
	}
	a.natsToken = newNATSToken(a.Tokens, a.Logger)
	// The first token now if the tenant answers; else the connection
	// retries until keep has one.
	ctx, cancel := context.WithTimeout(a.ctx, 3*time.Second)
	defer cancel()
	a.natsToken.refresh(ctx)
	return nats.TokenHandler(a.natsToken.get), nil
}

func (a *App) registerNATSMetrics() error {
	nc := a.NATS
	stat := func(name, help string, f func(nats.Statistics) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(nc.Stats())) })
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nats_connected", Help: "1 while the NATS connection is up.",
		}, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
		stat("nats_reconnects_total", "NATS reconnects.", func(s nats.Statistics) uint64 { return s.Reconnects }),
		stat("nats_in_msgs_total", "Messages received over NATS.", func(s nats.Statistics) uint64 { return s.InMsgs }),
		stat("nats_out_msgs_total", "Messages sent over NATS.", func(s nats.Statistics) uint64 { return s.OutMsgs }),
		stat("nats_in_bytes_total", "Bytes received over NATS.", func(s nats.Statistics) uint64 { return s.InBytes }),
		stat("nats_out_bytes_total", "Bytes sent over NATS.", func(s nats.Statistics) uint64 { return s.OutBytes }),
	}
	if err := metric.Register(a.Registry, cs...); err != nil {
		return fmt.Errorf("platform: nats metrics: %w", err)
	}
	return nil
}

// drainNATS lets subscriptions finish their messages and flushes what was
// published, within d.
func (a *App) drainNATS(d time.Duration) {
	if a.NATS == nil || a.NATS.IsClosed() {
		return
	}
	closed := make(chan struct{})
	a.NATS.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := a.NATS.Drain(); err != nil {
		if !errors.Is(err, nats.ErrConnectionClosed) {
			a.Logger.Warn("nats drain", slog.String("error", err.Error()))
		}
		a.NATS.Close()
		return
	}
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	select {
	case <-closed:
	case <-time.After(d):
		a.Logger.Warn("nats drain timed out")
		a.NATS.Close()
	}
}

// ServeNATS serves a NATS micro service whose endpoints register adds (a
// port's RegisterNATS), verifying transaction tokens with a.TxnValidator, as
// a task after the set-up steps (see ServeMicro).
func (a *App) ServeNATS(cfg micro.Config, m *natsauth.Metrics, register func(*natsauth.Service) error) {
	a.serveNATS(cfg.Name, func() (func() error, error) {
		// The handlers' context outlives the task's, so requests the drain
		// still delivers at shutdown are answered.
		ms, err := natsauth.NewService(a.NATS, cfg, a.TxnValidator,
			natsauth.WithMetrics(m), natsauth.WithContext(a.Context()), natsauth.WithLogger(a.Logger))
		if err != nil {
			return nil, err
		}
		return ms.Stop, register(ms)
	})
}

// ServeMicro serves a plain NATS micro service whose endpoints register
// adds, for a service that checks its callers itself (the Transaction Token
// Service). It is a task (Go): it starts once every set-up step added before
// it succeeded, so a replica whose stores are not there yet takes no share
// of the queue group's requests (a caller finding no responder at all
// reports the service unavailable); /readyz reports it until the endpoints
// are subscribed; it stops at shutdown, before NATS drains.
func (a *App) ServeMicro(cfg micro.Config, register func(micro.Service) error) {
	a.serveNATS(cfg.Name, func() (func() error, error) {
		ms, err := micro.AddService(a.NATS, cfg)
		if err != nil {
			return nil, err
		}
		return ms.Stop, register(ms)
	})
}

// serveNATS runs the service start adds, as ServeMicro says; start returns
// how to stop it, also when adding its endpoints failed.
func (a *App) serveNATS(service string, start func() (stop func() error, err error)) {
	name := "nats-" + service
	var serving atomic.Bool
	a.AddReadyCheck(name, func(context.Context) error {
		if !serving.Load() {
			return errors.New("not subscribed yet")
		}
		return nil
	})
	a.Go(name, func(ctx context.Context) error {
		stop, err := start()
		if stop != nil {
			defer func() { _ = stop() }()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		// The server has the subscriptions once a flush returns; without a
		// connection the client sends them when it reconnects.
		if err := a.NATS.FlushTimeout(time.Second); err != nil {
			a.Logger.Warn(name+": subscriptions not confirmed", slog.String("error", err.Error()))
		}
		serving.Store(true)
		<-ctx.Done()
		return nil
	})
}
