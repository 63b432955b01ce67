package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

type profileBody struct {
	UserID          string            `json:"user_id"`
	Email           string            `json:"email"`
	Name            string            `json:"name"`
	ShippingAddress map[string]string `json:"shipping_address"`
}

func (s *stack) profile(t *testing.T, tok string) profileBody {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.asOrders(t.Context(), tok), 5*time.Second)
	defer cancel()
	msg, err := natsauth.Request(ctx, s.nc, "authmesh.users.profile", nil)
	if err != nil {
		t.Fatalf("profile endpoint: %v", err)
	}
	var p profileBody
	if err := json.Unmarshal(msg.Data, &p); err != nil {
		t.Fatalf("profile reply %s: %v", msg.Data, err)
	}
	return p
}

// The tenant's Management API goes away and users restarts (so nothing is
// cached in memory): the caller's own reads answer from the snapshot kept
// in KV, a user without one still gets the profile endpoint's shipping
// address (all orders needs) while /v1/me is 503 with Retry-After, and the
// write paths stay tenant-first (503).
func TestOwnReadsWhileTheTenantIsDown(t *testing.T) {
	s := startStack(t)
	alice, bob := s.userToken("alice@authmesh.dev"), s.userToken("bob@authmesh.dev")

	if r := s.do("PATCH", "/v1/me", alice, `{"shipping_address":{"line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"}}`); r.Status != 200 {
		t.Fatalf("PATCH /v1/me: %d %s", r.Status, r.Body)
	}
	r := s.do("GET", "/v1/me", alice, "")
	if r.Status != 200 {
		t.Fatalf("GET /v1/me: %d %s", r.Status, r.Body)
	}
	var before userBody
	r.JSON(t, &before)

	// Bob has a profile from before snapshots existed, and no tenant read.
	kv, err := s.js.KeyValue(t.Context(), "users_profiles")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "profile."+base64.RawURLEncoding.EncodeToString([]byte(bobID)),
		[]byte(`{"user_id":"`+bobID+`","shipping_address":{"line1":"2 Side St","city":"Shelbyville","postal_code":"54321","country":"US"},"updated_at":"2025-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}

	// Restart, then the tenant goes down: nothing is left in memory. The
	// old instance stops first, so NATS requests reach the new one. The new
	// one starts while the token endpoint answers, because its NATS
	// connection is its client-credentials token (the auth callout): a
	// service cannot join the bus while the tenant is down, but one that
	// has joined keeps serving from its snapshots.
	s.stopUsers()
	s.base, s.stopUsers = s.startUsers()
	s.mgmtDown.Store(true)

	r = s.do("GET", "/v1/me", alice, "")
	if r.Status != 200 {
		t.Fatalf("tenant down: GET /v1/me: %d %s", r.Status, r.Body)
	}
	var after userBody
	r.JSON(t, &after)
	if after.UserID != aliceID || after.Email != "alice@authmesh.dev" || len(after.Roles) == 0 || !slices.Equal(after.Roles, before.Roles) ||
		after.Name != before.Name || after.ShippingAddress["city"] != "Springfield" {
		t.Fatalf("tenant down: GET /v1/me = %+v, want the snapshot of %+v", after, before)
	}
	if p := s.profile(t, alice); p.UserID != aliceID || p.Email != "alice@authmesh.dev" || p.ShippingAddress["city"] != "Springfield" {
		t.Fatalf("tenant down: profile endpoint = %+v", p)
	}

	// Bob, never read from the tenant: the profile endpoint answers with
	// the shipping address, /v1/me cannot.
	if p := s.profile(t, bob); p.UserID != bobID || p.ShippingAddress["city"] != "Shelbyville" {
		t.Fatalf("tenant down, no snapshot: profile endpoint = %+v", p)
	}
	r = s.do("GET", "/v1/me", bob, "")
	if r.Status != 503 || r.Header.Get("Retry-After") == "" || errorCode(t, r) != "unavailable" {
		t.Fatalf("tenant down, no snapshot: GET /v1/me = %d (Retry-After %q) %s, want 503 with Retry-After",
			r.Status, r.Header.Get("Retry-After"), r.Body)
	}

	// Writes never decide on the snapshot.
	if r := s.do("PATCH", "/v1/me", alice, `{"name":"Alice While Down"}`); r.Status != 503 {
		t.Fatalf("tenant down: PATCH /v1/me = %d %s, want 503", r.Status, r.Body)
	}
	carol := s.userToken("carol@authmesh.dev")
	if r := s.do("GET", "/v1/users/"+aliceID, carol, ""); r.Status != 503 {
		t.Fatalf("tenant down: admin GET /v1/users/{id} = %d %s, want 503 (tenant-first)", r.Status, r.Body)
	}
}
