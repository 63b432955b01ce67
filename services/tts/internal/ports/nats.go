// Package ports is the TTS's edge: the exchange endpoint on NATS, the
// responder to nats-server's auth callout with the kicks that follow a
// revocation, and the JWKS on HTTP.
package ports

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/metric"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/exchange"
)

// NATS names of the exchange endpoint (docs/conventions.md).
const (
	ExchangeEndpoint = "exchange"
	ExchangeSubject  = natsauth.DefaultTxnSubject
)

// maxRequestBytes bounds an exchange request: two access tokens and a scope.
const maxRequestBytes = 32 << 10

// attrWorkload is the requesting workload's client id on the exchange's span.
const attrWorkload = attribute.Key("authz.req_wl")

// Metrics are the exchange endpoint's figures.
type Metrics struct {
	exchanges *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// NewMetrics registers the exchange endpoint's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		exchanges: metric.CounterVec("authmesh_tts_exchanges_total",
			"Token exchanges by requesting workload, result and reason.", "workload", "result", "reason"),
		latency: metric.HistogramVec("authmesh_tts_exchange_seconds", "Time to answer one exchange.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25}, "result"),
	}
	if err := metric.Register(reg, m.exchanges, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

// AddExchangeEndpoint registers the exchange on svc. Its spans are children
// of ctx's (the app's context: an exchange in flight when the endpoint
// stops still finishes while its subscription drains).
func AddExchangeEndpoint(ctx context.Context, svc micro.Service, ex *exchange.Exchanger, m *Metrics, log *slog.Logger) error {
	h := &exchangeHandler{ex: ex, m: m, log: log, ctx: ctx}
	return svc.AddEndpoint(ExchangeEndpoint, micro.HandlerFunc(h.serve), micro.WithEndpointSubject(ExchangeSubject))
}

type exchangeHandler struct {
	ex  *exchange.Exchanger
	m   *Metrics
	log *slog.Logger
	ctx context.Context
}

// serve answers one exchange under a server span, as natsauth's endpoints
// are answered: a child of the requesting workload's client span, with the
// decision (authz.RecordDecision: the subject's hash, key id and client on
// success; the code and reason of a refusal) and the requesting workload's
// client id. Neither token nor the issued one is ever recorded.
func (h *exchangeHandler) serve(req micro.Request) {
	start := time.Now()
	ctx, req, span := natsauth.StartServerSpan(h.ctx, req, "exchange")
	defer span.End()
	res, err := h.exchange(ctx, req)
	workload, result, reason := "unknown", "issued", "ok"
	if res != nil {
		workload = res.Workload
		authz.RecordDecision(ctx, authz.Policy{}, res.Claims, nil)
		if span.IsRecording() {
			span.SetAttributes(attrWorkload.String(res.Workload))
		}
	}
	if err != nil {
		var e *exchange.Error
		if !errors.As(err, &e) {
			e = &exchange.Error{Status: 500, Code: "server_error", Reason: "internal", Description: "internal error"}
			h.log.ErrorContext(ctx, "exchange failed", slog.String("error", err.Error()))
		}
		authz.RecordDecision(ctx, authz.Policy{}, nil, &authz.Error{Code: authz.Code(e.Code), Reason: e.Reason})
		result, reason = "refused", e.Reason
		// The reason, never a token.
		h.log.WarnContext(ctx, "transaction token refused", slog.String("reason", e.Reason), slog.Int("status", e.Status),
			slog.String("request_id", platform.RequestIDFromContext(ctx)))
		_ = req.Error(strconv.Itoa(e.Status), e.Error(), nil)
	} else {
		_ = req.RespondJSON(res.TxnResponse)
		h.log.DebugContext(ctx, "transaction token issued", slog.String("workload", res.Workload),
			slog.String("sub_hash", res.Claims.SubjectHash()), slog.String("scope", res.Scope))
	}
	h.m.exchanges.WithLabelValues(workload, result, reason).Inc()
	h.m.latency.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

func (h *exchangeHandler) exchange(ctx context.Context, req micro.Request) (*exchange.Result, error) {
	if len(req.Data()) > maxRequestBytes {
		return nil, &exchange.Error{Status: 400, Code: "invalid_request", Reason: "too_large", Description: "the request is too large"}
	}
	var r natsauth.TxnRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		return nil, &exchange.Error{Status: 400, Code: "invalid_request", Reason: "not_json", Description: "the request is not a JSON token exchange request"}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.ex.Exchange(ctx, r, platform.RequestIDFromContext(ctx))
}
