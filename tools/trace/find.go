package trace

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Root span of an order: the orders service's POST /v1/orders.
const (
	OrdersService   = "orders"
	CreateOrderSpan = "POST /v1/orders"
)

// OrderIDAttr is the span attribute that carries an order's id.
const OrderIDAttr = "order.id"

// Latest returns the newest trace with a span named operation by service
// (Latest(ctx, OrdersService, CreateOrderSpan, time.Hour) is the latest
// order). When there is none it says what Jaeger does hold, so a wrong
// span name or a service that does not export shows up as such.
func (c *Client) Latest(ctx context.Context, service, operation string, lookback time.Duration) (Trace, error) {
	ts, err := c.Find(ctx, Query{Service: service, Operation: operation, Limit: 50, Lookback: lookback})
	if err != nil {
		return Trace{}, err
	}
	var best Trace
	var bestStart int64 = -1
	for _, t := range ts {
		for _, s := range t.Spans {
			if s.OperationName == operation && t.Service(s) == service && s.StartTime > bestStart {
				best, bestStart = t, s.StartTime
			}
		}
	}
	if bestStart >= 0 {
		return best, nil
	}
	return Trace{}, c.explainNone(ctx, service, fmt.Sprintf("no trace with span %q of %s in the last %v", operation, service, lookback), operation)
}

// ByOrder returns the trace of the order with id: among the traces with a
// span that carries it as OrderIDAttr, else among the recent traces of the
// orders service with an attribute that contains the id (a KV key, an
// invoice id; an id is long and random, at least 8 characters are asked
// for, so containing it is naming it), the one the order was created in,
// else the newest (a payment is a trace of its own).
func (c *Client) ByOrder(ctx context.Context, id string, lookback time.Duration) (Trace, error) {
	if len(id) < 8 || strings.ContainsAny(id, "/?#\"\\ ") {
		return Trace{}, fmt.Errorf("order id %q: not an order id", id)
	}
	ts, err := c.Find(ctx, Query{Service: OrdersService, Tags: map[string]string{OrderIDAttr: id}, Limit: 20, Lookback: lookback})
	if err != nil {
		return Trace{}, err
	}
	if t, ok := pick(ts, func(string) bool { return true }); ok {
		return t, nil
	}
	ts, err = c.Find(ctx, Query{Service: OrdersService, Limit: 500, Lookback: lookback})
	if err != nil {
		return Trace{}, err
	}
	if t, ok := pick(ts, func(v string) bool { return strings.Contains(v, id) }); ok {
		return t, nil
	}
	return Trace{}, c.explainNone(ctx, OrdersService, fmt.Sprintf("no span of the last %v has order %s as %s or in another attribute", lookback, id, OrderIDAttr), "")
}

// pick is, among the traces ts with a span attribute that match accepts,
// one with the orders service's CreateOrderSpan, else the one whose
// matching span is newest.
func pick(ts []Trace, match func(string) bool) (Trace, bool) {
	var best Trace
	bestCreate, bestStart := false, int64(-1)
	for _, t := range ts {
		create, start := false, int64(-1)
		for _, s := range t.Spans {
			create = create || (s.OperationName == CreateOrderSpan && t.Service(s) == OrdersService)
			if s.StartTime > start && slices.ContainsFunc(s.Tags, func(kv KeyValue) bool { return match(kv.String()) }) {
				start = s.StartTime
			}
		}
		if start < 0 {
			continue
		}
		if (create && !bestCreate) || (create == bestCreate && start > bestStart) {
			best, bestCreate, bestStart = t, create, start
		}
	}
	return best, bestStart >= 0
}

// explainNone is ErrNoTrace with what Jaeger holds instead.
func (c *Client) explainNone(ctx context.Context, service, what, operation string) error {
	services, err := c.Services(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(services, service) {
		return fmt.Errorf("%w: %s: Jaeger at %s holds no spans of %s (services: %s); do the services export (OTEL_EXPORTER_OTLP_ENDPOINT), and was an order placed since Jaeger started?",
			ErrNoTrace, what, c.URL, service, listOrNone(services))
	}
	if operation == "" {
		return fmt.Errorf("%w: %s", ErrNoTrace, what)
	}
	ops, err := c.Operations(ctx, service)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s (%s's spans: %s)", ErrNoTrace, what, service, listOrNone(ops))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// maxLinkedTraces bounds the fetches LinkedSpans makes for one trace.
const maxLinkedTraces = 8

// LinkedSpans names the spans t links to in other traces (a payment's
// request that an invoice.paid event continues from, say), by span id, as
// "service span-name": for Options.Linked. A trace it cannot fetch is left
// out; the waterfall then shows the bare ids.
func (c *Client) LinkedSpans(ctx context.Context, t Trace) map[string]string {
	inTrace := map[string]bool{}
	for _, s := range t.Spans {
		inTrace[s.SpanID] = true
	}
	want := map[string][]string{} // trace id -> span ids
	for _, s := range t.Spans {
		for _, r := range s.References {
			if r.RefType == FollowsFrom && !inTrace[r.SpanID] && r.TraceID != "" && r.TraceID != t.TraceID &&
				(want[r.TraceID] != nil || len(want) < maxLinkedTraces) {
				want[r.TraceID] = append(want[r.TraceID], r.SpanID)
			}
		}
	}
	names := map[string]string{}
	for id, spans := range want {
		lt, err := c.Trace(ctx, id)
		if err != nil {
			continue
		}
		for _, s := range lt.Spans {
			if slices.Contains(spans, s.SpanID) {
				names[s.SpanID] = fmt.Sprintf("%s %q", lt.Service(s), s.OperationName)
			}
		}
	}
	return names
}
