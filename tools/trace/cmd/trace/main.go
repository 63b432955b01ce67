// Command trace prints one trace from Jaeger's query API as an indented
// waterfall (`make trace`): by default the latest order's (the orders
// service's POST /v1/orders span), else the trace with a given id or of a
// given order.
//
//	trace [-jaeger URL] [-id TRACE_ID | -order ORDER_ID] [-lookback 1h] [-width 40]
//
// JAEGER_URL sets the same as -jaeger (default http://localhost:16686).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/authmesh/authmesh/tools/trace"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "trace:", err)
		os.Exit(1)
	}
}

func run() error {
	base := os.Getenv("JAEGER_URL")
	if base == "" {
		base = trace.DefaultURL
	}
	jaeger := flag.String("jaeger", base, "Jaeger's query API")
	id := flag.String("id", "", "print the trace with this id")
	order := flag.String("order", "", "print the latest trace of this order id")
	service := flag.String("service", trace.OrdersService, "service of the root span (without -id and -order)")
	operation := flag.String("operation", trace.CreateOrderSpan, "name of the root span (without -id and -order)")
	lookback := flag.Duration("lookback", time.Hour, "how far back to search")
	width := flag.Int("width", 40, "columns of the duration bar")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see -h)", flag.Args())
	}
	if *id != "" && *order != "" {
		return fmt.Errorf("-id and -order: give one")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := &trace.Client{URL: *jaeger}
	var (
		t   trace.Trace
		err error
	)
	switch {
	case *id != "":
		t, err = c.Trace(ctx, *id)
	case *order != "":
		t, err = c.ByOrder(ctx, *order, *lookback)
	default:
		t, err = c.Latest(ctx, *service, *operation, *lookback)
	}
	if err != nil {
		return err
	}
	return trace.Render(os.Stdout, t, trace.Options{Width: *width, Linked: c.LinkedSpans(ctx, t)})
}
