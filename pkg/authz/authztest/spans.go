package authztest

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// RecordSpans is a package's TestMain for tests that read spans back: it
// installs, as the global tracer provider, an SDK whose only processor
// writes every ended span to exp at once, runs the tests (run is m.Run),
// shuts the SDK down and returns run's exit code.
//
//	var recorded = tracetest.NewInMemoryExporter()
//	func TestMain(m *testing.M) { os.Exit(authztest.RecordSpans(recorded, m.Run)) }
func RecordSpans(exp *tracetest.InMemoryExporter, run func() int) int {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	code := run()
	_ = tp.Shutdown(context.Background())
	return code
}

// jwtShaped finds anything that looks like a JWS compact serialisation.
var jwtShaped = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.`)

// NoSecrets fails tb when the name, status, or any attribute of the spans,
// their events or links holds something JWT-shaped or one of forbidden
// (the tokens, emails and subjects a test used).
func NoSecrets(tb testing.TB, spans tracetest.SpanStubs, forbidden ...string) {
	tb.Helper()
	check := func(where, s string) {
		if jwtShaped.MatchString(s) {
			tb.Errorf("%s holds a JWT: %.60s…", where, s)
		}
		for _, f := range forbidden {
			if f != "" && strings.Contains(s, f) {
				tb.Errorf("%s holds %.20s…", where, f)
			}
		}
	}
	kvs := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			check(where+" "+string(kv.Key), kv.Value.String())
		}
	}
	for _, s := range spans {
		check(s.Name+" name", s.Name)
		check(s.Name+" status", s.Status.Description)
		kvs(s.Name, s.Attributes)
		for _, e := range s.Events {
			check(s.Name+" event", e.Name)
			kvs(s.Name+" event "+e.Name, e.Attributes)
		}
		for _, l := range s.Links {
			kvs(s.Name+" link", l.Attributes)
		}
	}
}
