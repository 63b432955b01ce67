package natsauth

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
)

// DefaultMaxBacklogAge bounds how long after being stored an event is still
// verified as of its stored time.
const DefaultMaxBacklogAge = 7 * 24 * time.Hour

// DefaultPullExpiry is ConsumerConfig.PullExpiry's default.
const DefaultPullExpiry = 2 * time.Second

// Event is a verified event handed to an EventHandler.
type Event struct {
	Envelope
	Claims   *authz.Claims // of the token that published it; Claims.Subject == Actor
	Subject  string        // NATS subject
	StoredAt time.Time     // JetStream's stored time, the instant the token was checked at
	Attempt  int           // 1 on first delivery
}

// EventHandler handles one verified event. Returning an error retries it with
// backoff; after MaxDeliver attempts the event is dead-lettered. Handlers must
// be idempotent (key on Event.ID): delivery is at least once.
type EventHandler func(ctx context.Context, ev *Event) error

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	Stream         string   // e.g. ORDERS_EVENTS. Required.
	Durable        string   // e.g. billing-orders. Required.
	FilterSubjects []string // optional
	// DeadLetterPrefix is where poison messages go: <prefix>.<original subject>,
	// e.g. "dlq.billing". Required.
	DeadLetterPrefix string

	// Policy is what every event's token must satisfy, and says whose
	// tokens the stream carries: users' (Users()), the publishing services'
	// own (Clients(ids...)), or both, e.g.
	// authz.Authenticated().Users().Clients("orders-service"). Required.
	Policy authz.Policy
	// Scopes, when set, returns the scopes an event on a subject is sent
	// with (the sender's hop, pkg/platform/mesh.Hops): its transaction token
	// must hold one of them, so a token narrowed for another hop — a profile
	// read, say — never carries an event. A subject it returns nothing for
	// is refused.
	Scopes func(subject string) []string
	// OnBehalfPolicy is required of the token when user_id != actor (acting on
	// another user's data, e.g. RequireAll("cancel:orders").Clients("orders-service")).
	// The zero value rejects every such event; any other must say who.
	OnBehalfPolicy authz.Policy

	// Workers is how many events are handled at once (default 1). Events of
	// one entity (the "<entity id>" of Nats-Msg-Id "<type>:<entity id>", see
	// PublishEvent) always go to the same worker, so they are handled in the
	// order they were delivered; only events of different entities overlap.
	Workers int

	MaxDeliver    int             // handler attempts, default 5
	BackOff       []time.Duration // delay before attempt n+1, default 1s, 5s, 30s, 2m
	AckWait       time.Duration   // default 30 s; also the handler's deadline
	MaxBacklogAge time.Duration   // default DefaultMaxBacklogAge
	// Bind is set when the stream's owner provisions the durable consumer
	// (ProvisionConsumer with the same Stream, Durable, FilterSubjects,
	// MaxDeliver, BackOff and AckWait) and exports to this reader only its
	// INFO, MSG.NEXT and acks. Run then never creates or updates the
	// consumer: it binds to it through the JetStream context given to
	// NewConsumer (jetstream.NewWithAPIPrefix onto the owner's imported API),
	// waits while it does not exist, and is not Ready while its settings
	// differ from these. Dead letters still go to the reader's own stream.
	Bind bool

	// PullExpiry is how long one pull request waits (default 2 s, at least
	// 1 s; the server heartbeats at half of it). It bounds how long delivery
	// stalls when a pull request is lost, e.g. sent while a just-elected
	// consumer leader's interest was still spreading through the cluster:
	// the client notices two missed heartbeats and pulls again. nats.go's
	// default of 30 s let such an event wait half a minute.
	PullExpiry time.Duration

	Metrics *Metrics // optional
	// Logger, when set, gets one warning per event retried or dead-lettered:
	// consumer, subject, stream sequence, attempt, result and reason (never a
	// token).
	Logger *slog.Logger
}

// Consumer runs a durable JetStream consumer whose events are verified before
// the handler sees them. Nothing is dropped silently: each message is either
// handled and acked, retried with backoff, or published to the dead-letter
// subject with its reason and then terminated.
type Consumer struct {
	js      jetstream.JetStream
	v       Verifier
	cfg     ConsumerConfig
	h       EventHandler
	now     func() time.Time
	ready   chan struct{}
	bindErr atomic.Pointer[error] // why the consumer is not there yet
}

// NewConsumer validates cfg; Run starts consuming.
//
//	c, err := natsauth.NewConsumer(js, validator, natsauth.ConsumerConfig{
//		Stream: "ORDERS_EVENTS", Durable: "billing-orders", DeadLetterPrefix: "dlq.billing",
//		Policy:         authz.Authenticated().Users().Clients("orders-service"),
//		OnBehalfPolicy: authz.RequireAll("cancel:orders").Clients("orders-service"),
//		Metrics: m,
//	}, func(ctx context.Context, ev *natsauth.Event) error { ... })
//	go c.Run(ctx)
func NewConsumer(js jetstream.JetStream, v Verifier, cfg ConsumerConfig, h EventHandler) (*Consumer, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	cfg = cfg.withDeliveryDefaults()
	if cfg.MaxBacklogAge == 0 {
		cfg.MaxBacklogAge = DefaultMaxBacklogAge
	}
	if cfg.PullExpiry == 0 {
		cfg.PullExpiry = DefaultPullExpiry
	}
	var errs []error
	if js == nil || v == nil || h == nil {
		errs = append(errs, errors.New("JetStream, verifier and handler are required"))
	}
	if cfg.Stream == "" || cfg.Durable == "" || cfg.DeadLetterPrefix == "" {
		errs = append(errs, errors.New("stream, durable and dead-letter prefix are required"))
	}
	switch {
	case !cfg.Policy.Declared():
		errs = append(errs, fmt.Errorf("policy: %w", authz.ErrNoPolicy))
	case cfg.Policy.IsPublic():
		errs = append(errs, errors.New("policy must not be public: events always carry a verified token"))
	case !cfg.Policy.SaysWho():
		errs = append(errs, fmt.Errorf("policy: %w", authz.ErrPolicyWithoutWho))
	}
	if cfg.OnBehalfPolicy.Declared() && !cfg.OnBehalfPolicy.SaysWho() {
		errs = append(errs, fmt.Errorf("on-behalf policy: %w", authz.ErrPolicyWithoutWho))
	}
	if cfg.MaxDeliver < 1 || cfg.AckWait < 0 || cfg.MaxBacklogAge < 0 || cfg.Workers < 1 {
		errs = append(errs, errors.New("the worker count, MaxDeliver, AckWait and MaxBacklogAge must be positive"))
	}
	if cfg.PullExpiry < time.Second {
		errs = append(errs, errors.New("PullExpiry must be at least 1s"))
	}
	for _, d := range cfg.BackOff {
		if d <= 0 {
			errs = append(errs, errors.New("BackOff values must be positive"))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("natsauth: consumer config: %w", err)
	}
	return &Consumer{js: js, v: v, cfg: cfg, h: h, now: time.Now, ready: make(chan struct{})}, nil
}

// withDeliveryDefaults fills in MaxDeliver, BackOff and AckWait, which the
// owner provisioning a consumer and its reader must agree on.
func (cfg ConsumerConfig) withDeliveryDefaults() ConsumerConfig {
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 5
	}
	if cfg.BackOff == nil {
		cfg.BackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute}
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	return cfg
}

// durableConfig is the server-side configuration of cfg's durable consumer.
func (cfg ConsumerConfig) durableConfig() jetstream.ConsumerConfig {
	cfg = cfg.withDeliveryDefaults()
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		FilterSubjects: cfg.FilterSubjects,
		// One delivery more than handler attempts: if the last attempt dies
		// (crash, ack timeout) the extra one dead-letters the message instead
		// of the server dropping it silently.
		MaxDeliver: cfg.MaxDeliver + 1,
	}
	if n := min(len(cfg.BackOff), cc.MaxDeliver-1); n > 0 {
		// The server's BackOff governs redeliveries after an ack timeout.
		cc.BackOff = cfg.BackOff[:n]
	}
	return cc
}

// ProvisionConsumer creates or updates, on a stream js owns, the durable
// consumer another service reads with ConsumerConfig.Bind. Only Stream,
// Durable, FilterSubjects, MaxDeliver, BackOff and AckWait of cfg matter;
// the reader must use the same values (pkg/platform/mesh holds them).
func ProvisionConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) error {
	if cfg.Stream == "" || cfg.Durable == "" {
		return errors.New("natsauth: provision consumer: stream and durable are required")
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, cfg.durableConfig()); err != nil {
		return fmt.Errorf("natsauth: provision consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return nil
}

// Ready returns nil once the durable consumer exists and messages flow.
func (c *Consumer) Ready() error {
	select {
	case <-c.ready:
		return nil
	default:
		if err := c.bindErr.Load(); err != nil {
			return fmt.Errorf("natsauth: consumer %s on %s not started: %w", c.cfg.Durable, c.cfg.Stream, *err)
		}
		return fmt.Errorf("natsauth: consumer %s on %s not started", c.cfg.Durable, c.cfg.Stream)
	}
}

// Run creates or updates the durable consumer, or with Bind binds to the
// one the stream's owner provisioned (waiting, while the stream or consumer
// does not exist yet, for its owner to create it), and processes messages
// until ctx ends; then it drains what it has in hand.
func (c *Consumer) Run(ctx context.Context) error {
	cc := c.cfg.durableConfig()
	var cons jetstream.Consumer
	for {
		var err error
		if c.cfg.Bind {
			cons, err = c.bind(ctx, cc)
		} else {
			cons, err = c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cc)
			if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("natsauth: consumer %s: %w", c.cfg.Durable, err)
			}
		}
		if err == nil {
			break
		}
		c.bindErr.Store(&err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	handle := func(msg jetstream.Msg) { c.process(ctx, msg) }
	var workers []chan jetstream.Msg
	var wg sync.WaitGroup
	if c.cfg.Workers > 1 {
		workers = make([]chan jetstream.Msg, c.cfg.Workers)
		for i := range workers {
			ch := make(chan jetstream.Msg, workerQueue)
			workers[i] = ch
			wg.Go(func() {
				for msg := range ch {
					c.process(ctx, msg)
				}
			})
		}
		// Consume calls back from one goroutine: a full queue holds the
		// next delivery back instead of buffering without bound.
		handle = func(msg jetstream.Msg) { workers[partition(msg, len(workers))] <- msg }
	}
	consumeCtx, err := cons.Consume(handle, jetstream.PullExpiry(c.cfg.PullExpiry))
	if err != nil {
		return fmt.Errorf("natsauth: consume %s: %w", c.cfg.Durable, err)
	}
	close(c.ready)
	<-ctx.Done()
	consumeCtx.Drain()
	<-consumeCtx.Closed()
	for _, ch := range workers {
		close(ch)
	}
	wg.Wait()
	return ctx.Err()
}

// bind looks the provisioned consumer up (every error is retried: the
// stream, the consumer or the import may not be there yet) and checks that
// its delivery settings are the ones this reader counts on.
func (c *Consumer) bind(ctx context.Context, want jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := c.js.Consumer(cctx, c.cfg.Stream, c.cfg.Durable)
	if err != nil {
		return nil, err
	}
	got := cons.CachedInfo().Config
	filters := got.FilterSubjects
	if got.FilterSubject != "" {
		filters = []string{got.FilterSubject}
	}
	ackWait := want.AckWait
	if len(want.BackOff) > 0 {
		ackWait = want.BackOff[0] // the server's rule when BackOff is set
	}
	if got.AckPolicy != want.AckPolicy || got.AckWait != ackWait || got.MaxDeliver != want.MaxDeliver ||
		!slices.Equal(got.BackOff, want.BackOff) || !slices.Equal(filters, want.FilterSubjects) {
		return nil, fmt.Errorf("provisioned with other settings (ack wait %s, max deliver %d, backoff %v, filters %v) than this reader expects (%s, %d, %v, %v)",
			got.AckWait, got.MaxDeliver, got.BackOff, filters, ackWait, want.MaxDeliver, want.BackOff, want.FilterSubjects)
	}
	return cons, nil
}

// workerQueue bounds each worker's queue of delivered, unhandled events.
const workerQueue = 16

// partition maps an event to a worker by its entity id (Nats-Msg-Id
// "<type>:<entity id>"), falling back to the subject.
func partition(msg jetstream.Msg, n int) int {
	key := msg.Subject()
	if h := msg.Headers(); h != nil {
		if id := h.Get(HeaderMsgID); id != "" {
			_, entity, found := strings.Cut(id, ":")
			if !found {
				entity = id
			}
			key = entity
		}
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(key))
	return int(f.Sum32() % uint32(n))
}
