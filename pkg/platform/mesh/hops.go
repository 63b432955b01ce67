package mesh

import (
	"slices"
	"sort"
	"strings"
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
	// Only the customer's own order: the orders service holds no
	// create:orders, so it cannot announce an order nobody placed (its
	// relay publishes the event sealed at the customer's request).
	{"orders.events.created", Orders, []string{"create:orders"}},
	{"orders.events.cancelled", Orders, []string{"cancel:orders"}},
	// Only the payer's own payment, for the same reason (billing holds
	// refund:invoices, not pay:invoices).
	{"billing.events.invoice.paid", Billing, []string{"pay:invoices"}},
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

// EventSubjects returns the subjects service publishes events on: its hops
// that fall in one of its event streams. The Transaction Token Service binds
// a token to an event on one of them only.
func EventSubjects(service string) []string {
	var streams []string
	for _, w := range Workloads {
		if w.Name != service {
			continue
		}
		for _, st := range w.Streams {
			if st.Events {
				streams = append(streams, st.Subjects...)
			}
		}
	}
	var out []string
	for _, h := range Hops {
		if h.Sender == service && slices.ContainsFunc(streams, func(f string) bool { return subjectMatches(f, h.Subject) }) {
			out = append(out, h.Subject)
		}
	}
	sort.Strings(out)
	return out
}

// subjectMatches reports whether the NATS subject subj falls under filter
// ("*" one token, a trailing ">" one or more).
func subjectMatches(filter, subj string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return i == len(f)-1 && len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
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
