package service_test

import (
	"context"
	"testing"
)

// BenchmarkExchange measures what a service pays for a transaction token:
// "uncached" is a full exchange with the real service over NATS (request,
// two access tokens verified — cached in the service's validator as they
// would be under load — an ES256 signature, the answer); "cached" is the
// client's cache hit that a steady load of one caller pays instead.
func BenchmarkExchange(b *testing.B) {
	f := newFixture(b)
	f.start(b, "")
	alice := f.UserToken(b, "alice@authmesh.dev", "openid")
	ctx := context.Background()
	scopes := []string{"read:profile"}
	b.Run("uncached", func(b *testing.B) {
		c := f.client(b, "orders-service")
		for b.Loop() {
			if _, err := c.Exchange(ctx, alice, scopes); err != nil {
				b.Fatal(err)
			}
			c.Forget(alice)
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := f.client(b, "orders-service")
		if _, err := c.Exchange(ctx, alice, scopes); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Exchange(ctx, alice, scopes); err != nil {
				b.Fatal(err)
			}
		}
	})
}
