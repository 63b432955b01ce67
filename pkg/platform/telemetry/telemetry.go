// Package telemetry installs OpenTelemetry tracing for a service, configured
// by the standard OTEL_* environment variables only:
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or
//     OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces"): the OTLP/HTTP receiver.
//     With neither set, nothing is installed: the global tracer stays
//     OpenTelemetry's no-op, and a span costs what a no-op does.
//   - OTEL_SDK_DISABLED=true: nothing is installed even with an endpoint.
//   - OTEL_SERVICE_NAME (default: the service's own name) and
//     OTEL_RESOURCE_ATTRIBUTES (key=value,...; percent-encoded values).
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
//     http/protobuf (the default) or http/json; grpc is not built in.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: always_on,
//     always_off, traceidratio, parentbased_always_on (the default),
//     parentbased_always_off, parentbased_traceidratio; the ratio in [0, 1].
//
// The exporter's own variables (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
// _COMPRESSION, ...) and the batch processor's (OTEL_BSP_*) are read by the
// OpenTelemetry SDK itself. A value Parse cannot use is an error at start-up,
// never a silent fallback. Spans go out over OTLP/HTTP only: no gRPC
// exporter, so the binaries stay small. In protobuf, the encoding is this
// package's (export.go: what the SDK's exporter sends, at a fraction of its
// cost); in JSON, the SDK's exporter does it all.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Config is the tracing configuration read from the environment. Its zero
// value (no endpoint) is tracing off.
type Config struct {
	// Endpoint is the full OTLP/HTTP traces URL ("" = off).
	Endpoint    string
	ServiceName string
	Resource    []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES, in order
	Sampler     string               // canonical name, e.g. "parentbased_always_on"
	Ratio       float64              // for the traceidratio samplers
	JSON        bool                 // protocol http/json rather than http/protobuf
}

// Enabled reports whether Start installs an SDK.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// String describes the configuration for the start-up log line (never
// headers: OTEL_EXPORTER_OTLP_HEADERS may hold an API key).
func (c Config) String() string {
	if !c.Enabled() {
		return "off"
	}
	s := c.Endpoint
	if c.JSON {
		s += " (http/json)"
	}
	s += " as " + c.ServiceName + " sampler " + c.Sampler
	if strings.HasSuffix(c.Sampler, "traceidratio") {
		s += " " + strconv.FormatFloat(c.Ratio, 'g', -1, 64)
	}
	return s
}

// Parse reads the OTEL_* variables through getenv; service is the default
// service name.
func Parse(service string, getenv func(string) string) (Config, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var errs []error
	cfg := Config{ServiceName: service, Sampler: "parentbased_always_on", Ratio: 1}
	disabled := false
	switch v := env("OTEL_SDK_DISABLED"); strings.ToLower(v) {
	case "", "false":
	case "true":
		disabled = true
	default:
		errs = append(errs, fmt.Errorf("OTEL_SDK_DISABLED=%q: want true or false", v))
	}
	endpointVar := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	if v := env(endpointVar); v != "" {
		cfg.Endpoint = v
	} else if v := env("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		endpointVar = "OTEL_EXPORTER_OTLP_ENDPOINT"
		cfg.Endpoint = strings.TrimRight(v, "/") + "/v1/traces"
	}
	if cfg.Endpoint != "" {
		if u, err := url.Parse(cfg.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s=%q: want an absolute http(s) URL of an OTLP endpoint (OTLP over HTTP; gRPC is not built in)", endpointVar, env(endpointVar)))
		}
	}
	protoVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	protocol := env(protoVar)
	if protocol == "" {
		protoVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		protocol = env(protoVar)
	}
	switch protocol {
	case "", "http/protobuf":
	case "http/json":
		cfg.JSON = true
	default:
		errs = append(errs, fmt.Errorf("%s=%q: want http/protobuf or http/json (gRPC is not built in)", protoVar, protocol))
	}
	attrs, err := parseResource(env("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		errs = append(errs, err)
	}
	cfg.Resource = attrs
	for _, kv := range attrs {
		if kv.Key == semconv.ServiceNameKey {
			cfg.ServiceName = kv.Value.AsString()
		}
	}
	if v := env("OTEL_SERVICE_NAME"); v != "" {
		cfg.ServiceName = v
	}
	if err := cfg.parseSampler(env("OTEL_TRACES_SAMPLER"), env("OTEL_TRACES_SAMPLER_ARG")); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("telemetry: %w", err)
	}
	if disabled {
		cfg.Endpoint = ""
	}
	return cfg, nil
}

func (c *Config) parseSampler(name, arg string) error {
	if name != "" {
		c.Sampler = strings.ToLower(name)
	}
	switch c.Sampler {
	case "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1", arg)
		}
		c.Ratio = r
		return nil
	}
	return fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// parseResource reads OTEL_RESOURCE_ATTRIBUTES: key=value pairs separated by
// commas, values percent-encoded (W3C baggage octets).
func parseResource(s string) ([]attribute.KeyValue, error) {
	if s == "" {
		return nil, nil
	}
	var out []attribute.KeyValue
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %q is not key=value", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: value of %q: %w", k, err)
		}
		out = append(out, attribute.String(k, val))
	}
	return out, nil
}

func (c Config) sampler() sdktrace.Sampler {
	switch c.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(c.Ratio)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.Ratio))
	}
	return sdktrace.ParentBased(sdktrace.AlwaysSample())
}

// exporter is the span exporter for cfg's endpoint and protocol: in
// protobuf this package's encoding, in JSON the SDK's exporter, each over
// otlptracehttp's client.
func (c Config) exporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	endpoint := otlptracehttp.WithEndpointURL(c.Endpoint)
	if c.JSON {
		return otlptracehttp.New(ctx, endpoint, otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON))
	}
	return newExporter(ctx, otlptracehttp.NewClient(endpoint))
}

// Shutdown flushes the spans still buffered and stops the exporter.
type Shutdown func(context.Context) error

// Start installs the global tracer provider and propagator for cfg and
// returns what flushes them at shutdown. The propagator (natsauth's W3C
// trace context and baggage) is installed either way; with tracing off
// nothing else is, and Shutdown does nothing. Export failures are logged on
// log, once per failure, never with a span's content.
//
// The tracer provider is process-wide: one Start per process.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (Shutdown, error) {
	otel.SetTextMapPropagator(natsauth.Propagator)
	if !cfg.Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := cfg.exporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(cfg.Resource...),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(cfg.sampler()),
	)
	if log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("telemetry export failed", slog.String("error", err.Error()))
		}))
	}
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}
