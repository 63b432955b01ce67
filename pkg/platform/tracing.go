package platform

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// tracerName is the instrumentation scope of the HTTP server and KV spans.
const tracerName = "github.com/authmesh/authmesh/pkg/platform"

var platformTracer = authz.NewTracer(tracerName)

// traceHTTP is the outermost middleware: one server span per request, named
// "<method> <route pattern>", a child of the caller's W3C trace context
// (natsauth.Propagator, the same as on NATS), with the http.* attributes of
// OpenTelemetry's semantic conventions; authz's middleware adds the
// decision to it. It records neither the path (ids, and in the users API
// subjects) nor query, headers or bodies. Probes and scrapes get no span.
// With tracing off the span is a no-op that still carries an incoming
// trace context on to NATS.
func (a *App) traceHTTP(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		route := routeLabel(c)
		if route == "/healthz" || route == "/readyz" || route == "/metrics" {
			return next(c)
		}
		req := c.Request()
		ctx := natsauth.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		name := req.Method
		if route != "unmatched" {
			name += " " + route
		}
		scheme := "http"
		if req.TLS != nil {
			scheme = "https"
		}
		ctx, span := platformTracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			// Its attributes (these, the decision, the ids, the status)
			// reach the SDK at End, in one call; the samplers telemetry
			// installs decide on the trace id and parent alone, never on
			// attributes.
			ctx, span = authz.GatherAttributes(ctx, span)
			authz.SetSpanAttributes(span, []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(req.Method),
				semconv.HTTPRoute(route), semconv.URLScheme(scheme)})
		}
		defer span.End()
		c.SetRequest(req.WithContext(ctx))
		err := next(c)
		if span.IsRecording() {
			res := c.Response()
			authz.SetSpanAttributes(span, []attribute.KeyValue{semconv.HTTPResponseStatusCode(res.Status),
				attrRequestID.String(res.Header().Get(echo.HeaderXRequestID))})
			if res.Status >= 500 {
				span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(res.Status)))
				span.SetStatus(codes.Error, http.StatusText(res.Status))
			}
		}
		return err
	}
}

// attrRequestID ties the span to the request id in logs and answers.
const attrRequestID = attribute.Key("authmesh.request_id")
