package platform

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is a JetStream key-value bucket whose reads see every write the
// server acknowledged, also on a replicated stream.
//
// nats.go creates KV streams with AllowDirect, so Get is a direct get that any
// replica answers, and a replica may not have applied the newest writes yet:
// an order created a moment ago could read as 404. KeyValue therefore turns
// AllowDirect off, which sends Get to the stream leader; Last and KeysMatching
// ask the leader as well. The price is that every read goes to one server per
// bucket.
type Bucket struct {
	jetstream.KeyValue
	stream jetstream.Stream
	prefix string // "$KV.<bucket>."
}

// KeyValue creates the bucket or updates its configuration, then binds it
// with reads from the stream leader (see Bucket).
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (*Bucket, error) {
	if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	name := "KV_" + cfg.Bucket
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: stream: %w", cfg.Bucket, err)
	}
	if sc := stream.CachedInfo().Config; sc.AllowDirect {
		sc.AllowDirect = false
		if stream, err = js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bucket %s: leader reads: %w", cfg.Bucket, err)
		}
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket) // binds with the stream's AllowDirect
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return &Bucket{KeyValue: kv, stream: stream, prefix: "$KV." + cfg.Bucket + "."}, nil
}

// kvOperation is the header nats.go marks KV deletes and purges with.
const kvOperation = "KV-Operation"

// Entry is a key's value at a revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Last returns the most recently written key matching filter (a key pattern
// with * and > wildcards), or jetstream.ErrKeyNotFound when there is none or
// it was deleted. A lookup by a key's last token, such as "u.*.<order id>",
// is one request answered from the server's subject index.
func (b *Bucket) Last(ctx context.Context, filter string) (Entry, error) {
	msg, err := b.stream.GetLastMsgForSubject(ctx, b.prefix+filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return Entry{}, err
	}
	switch msg.Header.Get(kvOperation) {
	case "DEL", "PURGE":
		return Entry{}, jetstream.ErrKeyNotFound
	}
	return Entry{Key: strings.TrimPrefix(msg.Subject, b.prefix), Value: msg.Data, Revision: msg.Sequence}, nil
}

// KeysMatching lists, sorted, the keys matching filter as the stream leader
// knows them. Keys whose last operation was a delete or purge are included (a
// marker remains): read each with Get, which reports them as not found.
func (b *Bucket) KeysMatching(ctx context.Context, filter string) ([]string, error) {
	info, err := b.stream.Info(ctx, jetstream.WithSubjectFilter(b.prefix+filter))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, b.prefix))
	}
	slices.Sort(keys)
	return keys, nil
}
