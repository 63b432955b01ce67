package mesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/authz/natstest"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

// The compromised-service suite: for each workload, an attacker holding
// exactly its NATS credentials tries what issue 13 lists, against the real
// deploy/nats/nats.conf (MESH_NATS_CONF names another file, e.g. an old
// configuration, to show the suite fails there). Every attempt must fail,
// and the victims' state shows it had no effect: alice stays revoked in
// every validator, no forged or captured message is stored or consumed, the
// durables keep their settings, and every profile reply is the real one.

const alice = "auth0|alice"

var revokedAt = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

type env struct {
	t        *testing.T
	s        *server.Server
	accounts bool // the configuration has an account per workload
	nc       map[string]*nats.Conn
	js       map[string]jetstream.JetStream
	watchers map[string]*natsauth.RevocationWatcher
	errs     map[string]chan error
}

// TestProvisionAppliesOneSetOfDefaults: every event stream and every
// dead-letter stream gets the same settings.
func TestProvisionAppliesOneSetOfDefaults(t *testing.T) {
	e := start(t)
	for _, w := range mesh.Workloads {
		for _, st := range w.Streams {
			s, err := e.js[w.Name].Stream(e.ctx(), st.Name)
			if err != nil {
				t.Fatal(err)
			}
			c := s.CachedInfo().Config
			if c.MaxAge != 30*24*time.Hour || c.Duplicates != 10*time.Minute || c.Storage != jetstream.FileStorage {
				t.Errorf("%s: MaxAge %v, Duplicates %v, storage %v", st.Name, c.MaxAge, c.Duplicates, c.Storage)
			}
		}
	}
}

func confPath(t *testing.T) string {
	if p := os.Getenv("MESH_NATS_CONF"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../../deploy/nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the server from the real configuration and sets the victims'
// state up the way the services do.
func start(t *testing.T) *env {
	t.Helper()
	opts, err := server.ProcessConfigFile(confPath(t))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	if opts.Websocket.Port != 0 {
		opts.Websocket.Port = -1
	}
	opts.StoreDir, opts.NoLog, opts.NoSigs = t.TempDir(), true, true
	s := natstest.Run(t, opts)
	meshtest.ServeCallout(t, s, meshtest.Options{})
	e := &env{t: t, s: s, accounts: len(opts.Accounts) > 1,
		nc: map[string]*nats.Conn{}, js: map[string]jetstream.JetStream{},
		watchers: map[string]*natsauth.RevocationWatcher{}, errs: map[string]chan error{}}
	for _, w := range mesh.Workloads {
		errs := make(chan error, 64)
		// Each with exactly its own identity: the TTS its nkey, the
		// others their client-credentials token through the callout.
		nc, js := meshtest.Connect(t, s, w.Name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
		e.nc[w.Name], e.js[w.Name], e.errs[w.Name] = nc, js, errs
	}
	ctx := e.ctx()
	store, err := natsauth.NewRevocationStore(ctx, e.js[mesh.Users], 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, alice, revokedAt); err != nil {
		t.Fatal(err)
	}
	for _, w := range mesh.Workloads {
		// Each owner creates its streams and durables with its own
		// permissions, as the services do.
		if err := mesh.Provision(ctx, e.js[w.Name], w.Name, 1); err != nil {
			t.Fatalf("%s provisions: %v", w.Name, err)
		}
		wt := natsauth.NewRevocationWatcher(e.ownerJS(w.Name, "KV_"+mesh.RevocationBucket))
		go func() { _ = wt.Run(t.Context()) }()
		if err := wt.WaitReady(ctx); err != nil {
			t.Fatalf("%s's revocation watcher: %v", w.Name, err)
		}
		e.watchers[w.Name] = wt
	}
	for name, subj := range map[string]string{mesh.Users: mesh.ProfileSubject, mesh.Billing: mesh.VoidSubject} {
		if _, err := e.nc[name].QueueSubscribe(subj, "q", func(m *nats.Msg) { _ = m.Respond([]byte("real")) }); err != nil {
			t.Fatal(err)
		}
		if err := e.nc[name].Flush(); err != nil {
			t.Fatal(err)
		}
	}
	e.drainErrs()
	return e
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// short is the deadline of an attempt that is expected to go unanswered.
func (e *env) short() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) drainErrs() {
	for _, ch := range e.errs {
		for len(ch) > 0 {
			<-ch
		}
	}
}

// ownerJS is who's view of stream's owner's JetStream API, as the services
// get it (platform.App.OwnerJetStream).
func (e *env) ownerJS(who, stream string) jetstream.JetStream {
	owner, _ := mesh.StreamOwner(stream)
	if owner.Name == who || !e.accounts {
		return e.js[who]
	}
	js, err := jetstream.NewWithAPIPrefix(e.nc[who], mesh.APIPrefix(owner.Account))
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// check fails the test when the victims' state shows an attack had an effect.
func (e *env) check(attacker string) {
	t := e.t
	t.Helper()
	time.Sleep(300 * time.Millisecond) // let republished, sourced or captured messages land
	ctx := e.ctx()
	for name, w := range e.watchers {
		if name == mesh.Users && attacker == mesh.Users {
			// A compromised users service owns the bucket; see the README
			// for what it can do. Its peers' watchers must still hold.
			continue
		}
		// Still revoked, and not from a later instant on (an unreadable
		// entry fails closed: revoked forever).
		if at, ok := w.RevokedAt(alice); !ok || at.Before(revokedAt) {
			t.Errorf("%s's validator: alice revoked at %v (%v), want %v", name, at, ok, revokedAt)
		}
	}
	// No event reached a stream of its owner or a reader's durable.
	for _, d := range mesh.Durables {
		cons, err := e.ownerJS(d.Reader, d.Stream).Consumer(ctx, d.Stream, d.Name)
		if err != nil {
			t.Errorf("%s binds to %s: %v", d.Reader, d.Name, err)
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Errorf("%s: %v", d.Name, err)
			continue
		}
		want := d.ConsumerConfig()
		owner, _ := mesh.StreamOwner(d.Stream)
		if owner.Name == attacker {
			// Its own stream's events are its own to publish (their tokens are
			// checked by the reader); only the settings must hold.
			info.NumPending, info.NumAckPending = 0, 0
		}
		if info.NumPending+uint64(info.NumAckPending) != 0 || info.Paused || info.Config.MaxDeliver != 6 || len(info.Config.BackOff) != 4 ||
			len(info.Config.FilterSubjects)+boolInt(info.Config.FilterSubject != "") != len(want.FilterSubjects) || info.Config.DeliverSubject != "" {
			t.Errorf("durable %s after %s's attacks: pending %d, ack pending %d, paused %v, config %+v",
				d.Name, attacker, info.NumPending, info.NumAckPending, info.Paused, info.Config)
		}
	}
	for _, w := range mesh.Workloads {
		for _, st := range w.Streams {
			s, err := e.js[w.Name].Stream(ctx, st.Name)
			if err != nil {
				t.Errorf("%s: %v", st.Name, err)
				continue
			}
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
			if err != nil {
				t.Errorf("%s: %v", st.Name, err)
				continue
			}
			for subj, n := range info.State.Subjects {
				// The victims' streams hold nothing (the test publishes no event);
				// the attacker's own may hold its own traffic, never another's.
				if w.Name != attacker || othersSubject(attacker, subj) {
					t.Errorf("%s holds %d message(s) on %s after %s's attacks", st.Name, n, subj, attacker)
				}
			}
			if w.Name != attacker && (len(info.Config.Sources) > 0 || info.Config.Mirror != nil || info.Config.RePublish != nil) {
				t.Errorf("%s was reconfigured: %+v", st.Name, info.Config)
			}
		}
	}
	// Every profile and void request is answered by the real responder.
	for range 10 {
		for _, subj := range []string{mesh.ProfileSubject, mesh.VoidSubject} {
			m, err := e.nc[mesh.Orders].Request(subj, nil, 2*time.Second)
			if err != nil || string(m.Data) != "real" {
				t.Errorf("orders' request to %s: %v %q", subj, err, replyData(m))
			}
		}
	}
}

// othersSubject is whether subj carries another workload's data: its events,
// inboxes or buckets (the buckets the attacker may read excepted).
func othersSubject(attacker, subj string) bool {
	for _, w := range mesh.Workloads {
		if w.Name == attacker {
			continue
		}
		if ownSubject(w, subj) || strings.HasPrefix(subj, w.InboxPrefix()+".") {
			return true
		}
		for _, b := range w.Buckets {
			if strings.HasPrefix(subj, "$KV."+b.Name+".") && !slices.Contains(b.Readers, attacker) {
				return true
			}
		}
	}
	return false
}

func ownSubject(w mesh.Workload, subj string) bool {
	for _, st := range w.Streams {
		for _, s := range st.Subjects {
			if strings.HasPrefix(subj, strings.TrimSuffix(s, ">")) {
				return true
			}
		}
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func replyData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// ownEventStream is a stream the attacker may configure (none for the TTS).
func ownEventStream(name string) string {
	w, _ := mesh.Lookup(name)
	for _, s := range w.Streams {
		if s.Events {
			return s.Name
		}
	}
	return ""
}

func TestCompromisedService(t *testing.T) {
	t.Parallel()
	for _, w := range mesh.Workloads {
		t.Run(w.Name, func(t *testing.T) {
			t.Parallel()
			e := start(t)
			a := w.Name
			nc, js := e.nc[a], e.js[a]
			aliceKey := "$KV." + mesh.RevocationBucket + "." + natsauth.RevocationKey(alice)
			del := func(subj string) {
				m := nats.NewMsg(subj)
				m.Header.Set("KV-Operation", "DEL")
				_ = nc.PublishMsg(m)
				m = nats.NewMsg(subj)
				m.Header.Set("KV-Operation", "PURGE")
				m.Header.Set("Nats-Rollup", "sub")
				_ = nc.PublishMsg(m)
			}

			t.Run("republish into the revocation bucket", func(t *testing.T) {
				// A new stream, and the attacker's own stream reconfigured, with
				// RePublish of a subject it may publish into alice's key.
				for _, name := range []string{"EVIL", ownEventStream(a)} {
					if name == "" {
						continue
					}
					_, _ = js.CreateOrUpdateStream(e.short(), jetstream.StreamConfig{Name: name, Subjects: []string{"$SRV.evil." + a, evSubject(a)},
						RePublish: &jetstream.RePublish{Source: ">", Destination: aliceKey}})
				}
				del("$SRV.evil." + a)
				del(evSubject(a))
				del(aliceKey) // and straight at the key
				_ = nc.Flush()
			})
			t.Run("capture inboxes and micro subjects", func(t *testing.T) {
				captured := []string{"_INBOX_orders.>", "_INBOX_users.>", "_INBOX_billing.>", "_INBOX.>", mesh.ProfileSubject, mesh.VoidSubject,
					"orders.events.>", "billing.events.>", "users.events.>", "$KV.users_profiles.>", "$KV.orders.>", "$KV.billing_invoices.>"}
				for _, name := range []string{"CAPTURE", ownEventStream(a)} {
					if name == "" {
						continue
					}
					for _, subj := range captured {
						_, _ = js.CreateOrUpdateStream(e.short(), jetstream.StreamConfig{Name: name, Subjects: []string{subj}, NoAck: true})
					}
				}
			})
			t.Run("republish into another's events", func(t *testing.T) {
				for _, victim := range []string{"billing.events.invoice.paid", "orders.events.created", "users.events.blocked"} {
					if ownSubject(mustLookup(a), victim) {
						continue
					}
					if s := ownEventStream(a); s != "" {
						_, _ = js.CreateOrUpdateStream(e.short(), jetstream.StreamConfig{Name: s, Subjects: []string{evSubject(a)},
							RePublish: &jetstream.RePublish{Source: ">", Destination: victim}})
						_, _ = js.Publish(e.short(), evSubject(a), []byte(`{"forged":true}`))
					}
					_ = nc.Publish(victim, []byte(`{"forged":true}`))
				}
				_ = nc.Flush()
			})
			t.Run("read another's stream or bucket", func(t *testing.T) {
				var wg sync.WaitGroup
				defer wg.Wait()
				for _, w := range mesh.Workloads {
					if w.Name == a {
						continue
					}
					var targets []string
					for _, s := range w.Streams {
						targets = append(targets, s.Name)
					}
					for _, b := range w.Buckets {
						if b.Name != mesh.RevocationBucket {
							targets = append(targets, "KV_"+b.Name)
						}
					}
					for _, s := range targets {
						for _, pre := range []string{"$JS.API", mesh.APIPrefix(w.Account)} {
							for _, subj := range []string{pre + ".STREAM.MSG.GET." + s, pre + ".DIRECT.GET." + s, pre + ".DIRECT.GET." + s + ".>", pre + ".STREAM.INFO." + s} {
								for _, req := range []string{strings.TrimSuffix(subj, ".>"), strings.TrimSuffix(subj, ".>") + ".x"} {
									wg.Go(func() {
										m, err := nc.Request(req, []byte(`{"seq":1}`), 300*time.Millisecond)
										if err == nil && (m.Header.Get("Nats-Stream") != "" || len(m.Data) > 0 && !strings.Contains(string(m.Data), `"error"`)) {
											t.Errorf("%s read %s: %q", a, req, m.Data)
										}
									})
								}
							}
						}
					}
				}
			})
			t.Run("create, update, pause or delete another's consumer", func(t *testing.T) {
				var wg sync.WaitGroup
				defer wg.Wait()
				for _, d := range mesh.Durables {
					owner, _ := mesh.StreamOwner(d.Stream)
					if owner.Name == a {
						continue
					}
					cfg, _ := json.Marshal(map[string]any{"stream_name": d.Stream, "config": map[string]any{
						"durable_name": d.Name, "ack_policy": "none", "deliver_subject": "_INBOX_" + a + ".stolen", "max_deliver": 1000}})
					pause, _ := json.Marshal(map[string]any{"pause_until": time.Now().Add(365 * 24 * time.Hour)})
					for _, pre := range []string{"$JS.API", mesh.APIPrefix(owner.Account)} {
						for subj, body := range map[string][]byte{
							pre + ".CONSUMER.CREATE." + d.Stream + "." + d.Name:                            cfg,
							pre + ".CONSUMER.CREATE." + d.Stream + "." + d.Name + ".orders.events.created": cfg,
							pre + ".CONSUMER.DURABLE.CREATE." + d.Stream + "." + d.Name:                    cfg,
							pre + ".CONSUMER.PAUSE." + d.Stream + "." + d.Name:                             pause,
							pre + ".CONSUMER.DELETE." + d.Stream + "." + d.Name:                            nil,
							pre + ".CONSUMER.RESET." + d.Stream + "." + d.Name:                             nil,
							pre + ".CONSUMER.CREATE." + d.Stream + ".STOLEN":                               cfg,
							pre + ".STREAM.PURGE." + d.Stream:                                              nil,
							pre + ".STREAM.UPDATE." + d.Stream:                                             nil,
							pre + ".STREAM.DELETE." + d.Stream:                                             nil,
						} {
							wg.Go(func() { _, _ = nc.Request(subj, body, 300*time.Millisecond) })
						}
					}
				}
			})
			t.Run("mirror or source another's stream", func(t *testing.T) {
				for _, d := range mesh.Durables {
					owner, _ := mesh.StreamOwner(d.Stream)
					if owner.Name == a {
						continue
					}
					ext := &jetstream.ExternalStream{APIPrefix: mesh.APIPrefix(owner.Account), DeliverPrefix: "_INBOX_" + a + ".src"}
					_, _ = js.CreateStream(e.short(), jetstream.StreamConfig{Name: "MIRROR", Mirror: &jetstream.StreamSource{Name: d.Stream, External: ext}})
					_, _ = js.CreateStream(e.short(), jetstream.StreamConfig{Name: "MIRROR2", Mirror: &jetstream.StreamSource{Name: d.Stream}})
					if s := ownEventStream(a); s != "" {
						w := mustLookup(a)
						st, _ := w.Stream(s)
						_, _ = js.UpdateStream(e.short(), jetstream.StreamConfig{Name: s, Subjects: st.Subjects,
							Sources: []*jetstream.StreamSource{{Name: d.Stream, External: ext}, {Name: d.Stream}}})
					}
				}
			})
			t.Run("answer another's micro subjects", func(t *testing.T) {
				for _, w := range mesh.Workloads {
					if w.Name == a {
						continue
					}
					for _, subj := range w.Serves {
						// A rogue member of the responders' queue group, and a plain subscriber.
						_, _ = nc.QueueSubscribe(subj, "q", func(m *nats.Msg) { _ = m.Respond([]byte("forged")) })
						_, _ = nc.QueueSubscribe(subj, "micro", func(m *nats.Msg) { _ = m.Respond([]byte("forged")) })
					}
				}
				_ = nc.Flush()
			})
			t.Run("write an older revocation", func(t *testing.T) {
				old, _ := json.Marshal(natsauth.Revocation{Subject: alice, RevokedAt: revokedAt.Add(-time.Hour)})
				_, _ = js.Publish(e.short(), aliceKey, old)
			})
			t.Run("publish another's events or KV keys", func(t *testing.T) {
				for _, w := range mesh.Workloads {
					if w.Name == a {
						continue
					}
					for _, st := range w.Streams {
						for _, s := range st.Subjects {
							_, _ = js.Publish(e.short(), strings.Replace(s, ">", "created", 1), []byte(`{"forged":true}`))
						}
					}
					for _, b := range w.Buckets {
						_, _ = js.Publish(e.short(), "$KV."+b.Name+".forged", []byte(`{"forged":true}`))
					}
				}
			})
			e.check(a)
		})
	}
}

// evSubject is a subject the attacker may publish on (one of its own event
// subjects, or a made-up one for the TTS).
func evSubject(name string) string {
	if s := ownEventStream(name); s != "" {
		w := mustLookup(name)
		st, _ := w.Stream(s)
		return strings.Replace(st.Subjects[0], ">", "evil", 1)
	}
	return "tts.evil"
}

func mustLookup(name string) mesh.Workload {
	w, _ := mesh.Lookup(name)
	return w
}

// TestPeersStillWork is the positive side: what the table grants works
// across accounts (a bound reader fetches and acks, the revocation feed
// reaches every validator within a second, micro calls are answered).
func TestPeersStillWork(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := e.ctx()
	if _, err := e.js[mesh.Orders].Publish(ctx, "orders.events.created", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cons, err := e.ownerJS(mesh.Billing, "ORDERS_EVENTS").Consumer(ctx, "ORDERS_EVENTS", "billing-orders")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range msgs.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("billing acks: %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("billing fetched %d events, want 1 (%v)", n, msgs.Error())
	}
	later := revokedAt.Add(time.Hour)
	store, err := natsauth.NewRevocationStore(ctx, e.js[mesh.Users], 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, alice, later); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for name, w := range e.watchers {
		for {
			if at, _ := w.RevokedAt(alice); at.Equal(later) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's validator did not see the new revocation within 1s", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if m, err := e.nc[mesh.Orders].Request(mesh.ProfileSubject, nil, 2*time.Second); err != nil || string(m.Data) != "real" {
		t.Fatalf("profile: %v", err)
	}
	if _, err := e.nc[mesh.Users].Request(mesh.ExchangeSubject, nil, 200*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("users -> tts exchange with no TTS running: %v, want no responders (the import exists)", err)
	}
}
