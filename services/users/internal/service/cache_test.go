package service

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// Orders asks for the caller's profile once per order: those lookups and
// GET /v1/me are answered from one tenant read per user and TTL, and a role
// change made through this service is seen at once.
func TestProfileLookupsSpareTheManagementAPI(t *testing.T) {
	s := startStack(t)
	alice, carol := s.userToken("alice@authmesh.dev"), s.userToken("carol@authmesh.dev")
	me := func(t *testing.T) userBody {
		t.Helper()
		r := s.do("GET", "/v1/me", alice, "")
		if r.Status != 200 {
			t.Fatalf("GET /v1/me: %d %s", r.Status, r.Body)
		}
		var u userBody
		r.JSON(t, &u)
		return u
	}
	profile := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(s.asOrders(t.Context(), alice), 3*time.Second)
		defer cancel()
		if _, err := natsauth.Request(ctx, s.nc, "authmesh.users.profile", nil); err != nil {
			t.Fatalf("profile: %v", err)
		}
	}

	me(t)
	start := s.mgmtCalls.Load()
	if start == 0 {
		t.Fatal("the first lookup did not reach the Management API: the counter is not wired")
	}
	for range 10 {
		profile(t)
		me(t)
	}
	if n := s.mgmtCalls.Load() - start; n != 0 {
		t.Fatalf("20 more lookups made %d Management API calls, want 0", n)
	}

	if r := s.do("PUT", "/v1/users/"+url.PathEscape(aliceID)+"/roles", carol, `{"roles":["support"]}`); r.Status != 200 {
		t.Fatalf("assign roles: %d %s", r.Status, r.Body)
	}
	if u := me(t); !slices.Equal(u.Roles, []string{"support"}) {
		t.Fatalf("GET /v1/me after the role change: roles %v", u.Roles)
	}
	settled := s.mgmtCalls.Load()
	for range 5 {
		profile(t)
		me(t)
	}
	if n := s.mgmtCalls.Load() - settled; n != 0 {
		t.Fatalf("lookups after the change made %d Management API calls, want 0", n)
	}
}
