// Package mesh is the one description of what each workload owns and may
// reach on NATS: its account and user, its streams and buckets, the durable
// consumers others read from them, the micro subjects it serves and calls,
// and the revocation feed every validator reads.
//
// Everything else is derived from it: deploy/nats/accounts.conf (accounts,
// users, permissions, exports and imports; `make nats-config`, checked by a
// test), the streams, buckets and consumers the services provision, the API
// prefixes readers bind with, and the NATS table in docs/conventions.md.
//
// Each workload has an account of its own. Inside it, its user may publish
// and subscribe to an exact allow list; across accounts, only what an owner
// exports to a named reader crosses. See pkg/authz/natsauth/README.md,
// "Isolation", for why.
package mesh

//go:generate go run ./cmd/natsconf -dir ../../../deploy/nats -doc ../../../docs/conventions.md

import (
	"slices"
	"strings"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Workload names: each is a NATS user, the env prefix (USERS_ ...) and the
// inbox prefix (_INBOX_users).
const (
	Users   = "users"
	Orders  = "orders"
	Billing = "billing"
	TTS     = "tts"
)

// Micro subjects (docs/conventions.md).
const (
	ProfileSubject  = "authmesh.users.profile"
	VoidSubject     = "authmesh.billing.orders.void"
	ExchangeSubject = "authmesh.tts.exchange"
)

// RevocationBucket is the bucket of revoked subjects: the users service
// writes it, every validator (the TTS included) reads it.
const RevocationBucket = natsauth.RevocationBucket

// DPoPReplayBucket is the bucket of DPoP proof ids service has seen
// (RFC 9449 §11.1), shared by its replicas. Each service checks the proofs
// of its own requests, so the bucket is its own: no export, no reader.
func DPoPReplayBucket(service string) string { return service + "_dpop_jti" }

// SystemAccount is the server's system account; no workload lives in it.
const SystemAccount = "SYS"

// Workload is one deployable's identity on NATS.
type Workload struct {
	Name    string // NATS user, env prefix and inbox prefix
	Account string // its own account
	// JetStream is whether the account has JetStream of its own (it owns
	// streams or buckets).
	JetStream bool
	Streams   []Stream // event and dead-letter streams it owns
	Buckets   []Bucket // KV buckets it owns
	Serves    []string // micro subjects it answers (exported to their callers)
	Calls     []string // micro subjects of other workloads it requests
	// AnswersCallout marks the one workload with a NATS user of its own (an
	// nkey): it answers the auth callout for every other connection, so its
	// account is the callout account.
	AnswersCallout bool
}

// Stream is a stream a workload owns.
type Stream struct {
	Name     string
	Subjects []string
	// Events is true for an event stream others may read through durables;
	// false for dead letters.
	Events bool
}

// Bucket is a KV bucket a workload owns. Readers get the live feed of its
// subjects and read-only snapshots (stream info and direct gets), never
// CONSUMER.CREATE, whose deliver_subject cannot be constrained.
type Bucket struct {
	Name    string
	Readers []string
}

// Durable is a durable pull consumer on one workload's stream for another
// workload. The stream's owner provisions it with these settings; the reader
// only binds to it (natsauth.ConsumerConfig.Bind) and checks them.
type Durable struct {
	Stream         string
	Name           string
	Reader         string
	FilterSubjects []string
	// Zero values take natsauth's defaults on both sides.
	MaxDeliver int
	AckWait    time.Duration
	BackOff    []time.Duration
}

// Workloads is the mesh. Names follow docs/conventions.md.
var Workloads = []Workload{
	{
		Name: Users, Account: "USERS", JetStream: true,
		Streams: []Stream{{Name: "USERS_EVENTS", Subjects: []string{"users.events.>"}, Events: true}},
		Buckets: []Bucket{
			{Name: "users_profiles"},
			{Name: RevocationBucket, Readers: []string{Orders, Billing, TTS}},
			{Name: DPoPReplayBucket(Users)},
		},
		Serves: []string{ProfileSubject},
		Calls:  []string{ExchangeSubject},
	},
	{
		Name: Orders, Account: "ORDERS", JetStream: true,
		Streams: []Stream{
			{Name: "ORDERS_EVENTS", Subjects: []string{"orders.events.>"}, Events: true},
			{Name: "ORDERS_DLQ", Subjects: []string{"dlq.orders.>"}},
		},
		Buckets: []Bucket{{Name: "orders"}, {Name: "orders_idempotency"}, {Name: DPoPReplayBucket(Orders)}},
		Calls:   []string{ProfileSubject, VoidSubject, ExchangeSubject},
	},
	{
		Name: Billing, Account: "BILLING", JetStream: true,
		Streams: []Stream{
			{Name: "BILLING_EVENTS", Subjects: []string{"billing.events.>"}, Events: true},
			{Name: "BILLING_DLQ", Subjects: []string{"dlq.billing.>"}},
		},
		Buckets: []Bucket{{Name: "billing_invoices"}, {Name: DPoPReplayBucket(Billing)}},
		Serves:  []string{VoidSubject},
		Calls:   []string{ExchangeSubject},
	},
	{
		// The Transaction Token Service: no JetStream, reads revocations,
		// answers the auth callout.
		Name: TTS, Account: "TTS",
		Serves:         []string{ExchangeSubject},
		AnswersCallout: true,
	},
}

// Durables are the cross-workload consumers.
var Durables = []Durable{
	{Stream: "ORDERS_EVENTS", Name: "billing-orders", Reader: Billing,
		FilterSubjects: []string{"orders.events.created", "orders.events.cancelled"}},
	{Stream: "BILLING_EVENTS", Name: "orders-billing", Reader: Orders},
	{Stream: "USERS_EVENTS", Name: "orders-users", Reader: Orders},
}

// Lookup returns the workload called name.
func Lookup(name string) (Workload, bool) {
	i := slices.IndexFunc(Workloads, func(w Workload) bool { return w.Name == name })
	if i < 0 {
		return Workload{}, false
	}
	return Workloads[i], true
}

// StreamOwner returns the workload owning the stream (a bucket's stream is
// "KV_<bucket>").
func StreamOwner(stream string) (Workload, bool) {
	for _, w := range Workloads {
		if slices.ContainsFunc(w.Streams, func(s Stream) bool { return s.Name == stream }) ||
			slices.ContainsFunc(w.Buckets, func(b Bucket) bool { return "KV_"+b.Name == stream }) {
			return w, true
		}
	}
	return Workload{}, false
}

// Stream returns the stream called name if w owns it.
func (w Workload) Stream(name string) (Stream, bool) {
	i := slices.IndexFunc(w.Streams, func(s Stream) bool { return s.Name == name })
	if i < 0 {
		return Stream{}, false
	}
	return w.Streams[i], true
}

// Provisions returns the durables on w's streams, which w creates for their readers.
func (w Workload) Provisions() []Durable {
	return where(Durables, func(d Durable) bool { _, ok := w.Stream(d.Stream); return ok })
}

// Reads returns the durables w reads.
func (w Workload) Reads() []Durable {
	return where(Durables, func(d Durable) bool { return d.Reader == w.Name })
}

// where returns the entries of table that keep holds for, in order (nil
// when none does).
func where[T any](table []T, keep func(T) bool) []T {
	var out []T
	for _, e := range table {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// DurableOf returns the durable reader reads on stream.
func DurableOf(reader, stream string) (Durable, bool) {
	i := slices.IndexFunc(Durables, func(d Durable) bool { return d.Reader == reader && d.Stream == stream })
	if i < 0 {
		return Durable{}, false
	}
	return Durables[i], true
}

// InboxPrefix is the reply-subject prefix of w's connections.
func (w Workload) InboxPrefix() string { return "_INBOX_" + w.Name }

// EnvPrefix is w's configuration prefix, e.g. "USERS_".
func (w Workload) EnvPrefix() string { return strings.ToUpper(w.Name) + "_" }

// APIPrefix is the JetStream API prefix under which an importer reaches
// account's exported API subjects: "JS.<account>.API" (bind with
// jetstream.NewWithAPIPrefix).
func APIPrefix(account string) string { return "JS." + account + ".API" }

// ConsumerConfig is d's part of a natsauth.ConsumerConfig: stream, name,
// filter and the delivery settings both the owner (provisioning) and the
// reader (binding) use. The reader adds its policy, handler settings and
// dead-letter prefix.
func (d Durable) ConsumerConfig() natsauth.ConsumerConfig {
	return natsauth.ConsumerConfig{
		Stream: d.Stream, Durable: d.Name, FilterSubjects: slices.Clone(d.FilterSubjects),
		MaxDeliver: d.MaxDeliver, AckWait: d.AckWait, BackOff: slices.Clone(d.BackOff),
	}
}
