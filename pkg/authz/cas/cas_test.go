package cas

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz/natstest"
)

func TestRetry(t *testing.T) {
	t.Parallel()
	errConflict := errors.New("conflict")
	n := 0
	v, err := Retry(func() (int, error) {
		if n++; n < 3 {
			return 0, Lost(errConflict)
		}
		return n, nil
	})
	if v != 3 || err != nil {
		t.Fatalf("Retry = %d, %v", v, err)
	}
	n = 0
	_, err = Retry(func() (int, error) { n++; return 0, Lost(errConflict) })
	if n != Attempts || !errors.Is(err, ErrContended) || !errors.Is(err, errConflict) {
		t.Fatalf("after %d tries: %v", n, err)
	}
	n = 0
	if _, err = Retry(func() (int, error) { n++; return 7, errConflict }); err != errConflict || n != 1 {
		t.Fatalf("an unmarked failure = %v after %d tries, want it returned at once", err, n)
	}
	if Lost(nil) != nil {
		t.Fatal("Lost(nil) is not nil")
	}
}

// TestConflict loses each kind of race against a real bucket, and checks
// that other failures are not taken for one.
func TestConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv, err := natstest.JetStream(t).CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "k", []byte("2")); !Conflict(err) {
		t.Errorf("Create on an existing key: Conflict(%v) = false", err)
	}
	if _, err := kv.Update(ctx, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("3"), rev); !Conflict(err) {
		t.Errorf("Update at a stale revision: Conflict(%v) = false", err)
	}
	if _, err := kv.Update(ctx, "bad key!", []byte("3"), rev); err == nil || Conflict(err) {
		t.Errorf("an invalid key: Conflict(%v) = true", err)
	}
	if Conflict(nil) || Conflict(errors.New("wrong last sequence")) {
		t.Error("Conflict holds for nil or an error's text")
	}
}
