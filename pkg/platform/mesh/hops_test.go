package mesh

import (
	"slices"
	"testing"

	"github.com/authmesh/authmesh/pkg/authz"
)

// TestHopsMatchTheTable: every message that carries a transaction token is
// one its sender may send — a micro subject it calls or a subject of an
// event stream it owns — every call but the exchange itself carries one, and
// every scope is one of the tenant's API permissions.
func TestHopsMatchTheTable(t *testing.T) {
	perms, err := authz.LoadTenantPermissions("../../../deploy/tenant.yaml", "https://api.authmesh.dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range Hops {
		w, ok := Lookup(h.Sender)
		if !ok {
			t.Errorf("%s: sender %q is not a workload", h.Subject, h.Sender)
			continue
		}
		owned := slices.ContainsFunc(w.Streams, func(s Stream) bool {
			return s.Events && slices.ContainsFunc(s.Subjects, func(p string) bool { return subjectMatches(p, h.Subject) })
		})
		if !owned && !slices.Contains(w.Calls, h.Subject) {
			t.Errorf("%s: %s neither calls it nor owns a stream with it", h.Subject, h.Sender)
		}
		if len(h.Scopes) == 0 {
			t.Errorf("%s: no scopes: nothing could be sent there", h.Subject)
		}
		for _, s := range h.Scopes {
			if !slices.Contains(perms, s) {
				t.Errorf("%s: scope %q is not a permission of the tenant's API", h.Subject, s)
			}
		}
	}
	for _, w := range Workloads {
		for _, c := range w.Calls {
			if c != ExchangeSubject && HopScopes(c) == nil {
				t.Errorf("%s calls %s, which has no hop: it could send nothing there", w.Name, c)
			}
		}
	}
	if got := WorkloadScopes(Billing); !slices.Equal(got, []string{"pay:invoices", "refund:invoices"}) {
		t.Errorf("billing may ask for %v", got)
	}
	if WorkloadScopes(TTS) != nil {
		t.Error("the TTS asks itself for tokens")
	}
	// Event tokens are bound only to a workload's own event subjects, never
	// to a request subject or another's events.
	for svc, want := range map[string][]string{
		Orders:  {"orders.events.cancelled", "orders.events.created"},
		Billing: {"billing.events.invoice.paid", "billing.events.invoice.refunded"},
		Users:   {"users.events.blocked", "users.events.unblocked"},
		TTS:     nil,
	} {
		if got := EventSubjects(svc); !slices.Equal(got, want) {
			t.Errorf("EventSubjects(%s) = %v, want %v", svc, got, want)
		}
	}
}
