package mesh

import (
	"slices"
	"sort"
)

// Hop is one kind of NATS message a workload sends on behalf of a
// transaction, and the scopes its receivers check. A message's transaction
// token is narrowed to Scopes (intersected with what the caller's token holds),
// and the Transaction Token Service grants a workload no scope outside the
// hops it sends.
type Hop struct {
	Subject string   // exact NATS subject
	Sender  string   // the sending service ("orders")
	Scopes  []string // what a receiver may require of the message's token
}

// Hops is every message of the mesh that carries a transaction token. A
// subject not listed here gets no token: sending there fails (deny by
// default).
var Hops = []Hop{
	{ProfileSubject, Orders, []string{"read:profile"}},
	{VoidSubject, Orders, []string{"cancel:orders"}},
	// The relay republishes under orders-service (cancel:orders); a user's
	// own order carries create:orders.
	{"orders.events.created", Orders, []string{"create:orders", "cancel:orders"}},
	{"orders.events.cancelled", Orders, []string{"cancel:orders"}},
	// The relay republishes under billing-service (refund:invoices).
	{"billing.events.invoice.paid", Billing, []string{"pay:invoices", "refund:invoices"}},
	{"billing.events.invoice.refunded", Billing, []string{"refund:invoices"}},
	{"users.events.blocked", Users, []string{"block:users"}},
	{"users.events.unblocked", Users, []string{"block:users"}},
}

// HopScopes returns the scopes of the messages on subject (nil when none is
// declared).
func HopScopes(subject string) []string {
	for _, h := range Hops {
		if h.Subject == subject {
			return h.Scopes
		}
	}
	return nil
}

// WorkloadScopes returns every scope service may ask the Transaction Token
// Service for: the union of the scopes of the hops it sends.
func WorkloadScopes(service string) []string {
	var out []string
	for _, h := range Hops {
		if h.Sender != service {
			continue
		}
		for _, s := range h.Scopes {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Requesters are the workloads that ask the Transaction Token Service for
// tokens: the senders of Hops.
func Requesters() []string {
	var out []string
	for _, h := range Hops {
		if !slices.Contains(out, h.Sender) {
			out = append(out, h.Sender)
		}
	}
	return out
}
