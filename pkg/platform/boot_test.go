package platform

import (
	"context"
	"errors"
	"testing"
)

// TestBootClosesNATSWhenWiringFails: a service whose wiring fails returns
// the error, leaves no NATS connection open and never runs.
func TestBootClosesNATSWhenWiringFails(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	errWire := errors.New("no bucket for you")
	var wired *App
	err := Boot(context.Background(), is.billingConfig(t, nil), Options{BeforeRun: func(*App) { t.Error("BeforeRun after a failed wiring") }},
		func(a *App) error {
			wired = a
			return errWire
		})
	if !errors.Is(err, errWire) {
		t.Fatalf("Boot = %v, want the wiring's error", err)
	}
	if wired == nil || !wired.NATS.IsClosed() {
		t.Fatal("the NATS connection New opened is still open")
	}
}
