package platform

import (
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/authmesh/pkg/authz"
)

// httpMetrics are the per-app HTTP collectors.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests by method, route template and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "HTTP request latency by method, route template and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// SubjectHash is the short, stable stand-in for a token subject in logs,
// metrics and traces (authz.SubjectHash): operators can correlate a user's
// requests without the telemetry holding identities (and never a token).
func SubjectHash(sub string) string { return authz.SubjectHash(sub) }

// routeLabel is the matched route template; unmatched paths (Echo's own 404
// and 405 answers) share one label so that scanners cannot blow up metric
// cardinality.
func routeLabel(c echo.Context) string {
	if c.Get(echo.ContextKeyHeaderAllow) != nil {
		return "unmatched"
	}
	if h := c.Handler(); h == nil || reflect.ValueOf(h).Pointer() == notFoundHandler {
		return "unmatched"
	}
	if p := c.Path(); p != "" {
		return p
	}
	return "unmatched"
}

var notFoundHandler = reflect.ValueOf(echo.NotFoundHandler).Pointer()

// observe is the outermost middleware after the request id: it hands errors
// to the error handler (so the status is final), then writes one log line and
// the metrics for the request.
func (a *App) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		lat := time.Since(start)
		res := c.Response()
		route := routeLabel(c)
		code := strconv.Itoa(res.Status)
		a.httpMetrics.requests.WithLabelValues(c.Request().Method, route, code).Inc()
		a.httpMetrics.latency.WithLabelValues(c.Request().Method, route, code).Observe(lat.Seconds())

		if route == "/healthz" || route == "/readyz" || route == "/metrics" {
			if res.Status < 500 {
				return nil // probes and scrapes would drown the log
			}
		}
		attrs := []slog.Attr{
			slog.String("request_id", RequestIDFromContext(c.Request().Context())),
			slog.String("method", c.Request().Method),
			slog.String("route", route),
			slog.Int("status", res.Status),
			slog.Float64("latency_ms", float64(lat.Microseconds())/1000),
			slog.Int64("bytes_out", res.Size),
		}
		if cl, ok := authz.ClaimsFromEcho(c); ok {
			attrs = append(attrs, slog.String("sub_hash", cl.SubjectHash()))
			if cl.IsM2M() {
				attrs = append(attrs, slog.String("azp", cl.Client()))
			}
		}
		level := slog.LevelInfo
		if logged, ok := c.Get(loggedErrorKey).(error); ok {
			e, _ := resolve(logged, a.opts.Errors)
			attrs = append(attrs, slog.String("error_code", e.Code))
			if e.Status >= 500 {
				level = slog.LevelError
				// The internal cause is logged here and only here. authz errors
				// never contain the token (their contract), echo's neither.
				attrs = append(attrs, slog.String("error", logged.Error()))
			} else if code := authz.CodeOf(logged); code != "" {
				var ae *authz.Error
				if errors.As(logged, &ae) && ae.Reason != "" {
					attrs = append(attrs, slog.String("authz_reason", ae.Reason))
				}
			}
		}
		a.Logger.LogAttrs(c.Request().Context(), level, "http request", attrs...)
		return nil
	}
}

// newEcho builds the Echo instance with the shared middleware chain.
func (a *App) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(a.opts.Errors)
	e.Use(a.traceHTTP)
	e.Use(a.requestID)
	e.Use(a.observe)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableErrorHandler: true, // the error goes up to observe, which logs it once
		DisablePrintStack:   false,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal server error",
				Err: errors.Join(err, errors.New("panic: "+string(stack)))}
		},
	}))
	e.Use(middleware.BodyLimit(a.opts.BodyLimit))
	e.Use(middleware.CORSWithConfig(authz.CORSConfig(authz.CORS{Origins: a.Config.CORSOrigins, AllowHeaders: a.opts.CORSAllowHeaders})))
	// After routing (e.Use), so it finds the matched route's policy.
	e.Use(authz.MiddlewareWithConfig(authz.MiddlewareConfig{
		Validator: a.Validator,
		Registry:  a.Routes,
		Metrics:   a.AuthzMetrics,
		DPoP:      a.DPoP,
	}))
	return e
}

func (a *App) mountOps() {
	a.Route(http.MethodGet, "/healthz", authz.Public(), func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	a.Route(http.MethodGet, "/readyz", authz.Public(), a.readyz)
	a.Route(http.MethodGet, "/metrics", authz.Public(), echo.WrapHandler(a.metricsHandler()))
}

func (a *App) readyz(c echo.Context) error {
	results, ok := a.checkReady(c.Request().Context())
	status := http.StatusOK
	word := "ready"
	if !ok {
		status = http.StatusServiceUnavailable
		word = "not_ready"
		c.Response().Header().Set(echo.HeaderRetryAfter, "1")
	}
	return c.JSON(status, map[string]any{"status": word, "checks": results})
}
