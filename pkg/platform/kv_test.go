package platform

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/mesh/meshtest"
)

func TestKeyValueReadsFromLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, js := meshtest.Connect(t, meshtest.Start(t), mesh.Orders)
	cfg := jetstream.KeyValueConfig{Bucket: "orders", History: 5}
	if _, err := KeyValue(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	// Starting again (CreateOrUpdateKeyValue turns AllowDirect back on) is fine.
	b, err := KeyValue(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_orders")
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.AllowDirect {
		t.Fatal("AllowDirect still on: gets may be answered by a lagging replica")
	}

	for _, k := range []string{"u.alice.o1", "u.alice.o2", "u.bob.o3"} {
		if _, err := b.Create(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := b.Put(ctx, "u.alice.o1", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.Last(ctx, "u.*.o1")
	if err != nil || e.Key != "u.alice.o1" || string(e.Value) != "v2" || e.Revision != rev {
		t.Fatalf("Last(u.*.o1) = %+v, %v; want v2 at revision %d", e, err, rev)
	}
	if _, err := b.Last(ctx, "u.*.nope"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("Last of a missing key: %v", err)
	}
	if err := b.Delete(ctx, "u.bob.o3"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Last(ctx, "u.*.o3"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("Last of a deleted key: %v", err)
	}
	keys, err := b.KeysMatching(ctx, "u.alice.*")
	if err != nil || !slices.Equal(keys, []string{"u.alice.o1", "u.alice.o2"}) {
		t.Fatalf("KeysMatching(u.alice.*) = %v, %v", keys, err)
	}
	if keys, err := b.KeysMatching(ctx, "u.carol.*"); err != nil || len(keys) != 0 {
		t.Fatalf("Keys of nobody = %v, %v", keys, err)
	}
}
