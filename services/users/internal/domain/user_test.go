package domain

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestProfileUpdateNormalize(t *testing.T) {
	t.Parallel()
	good := func() *Address {
		return &Address{Line1: " 1 Main St ", City: "Lyon", PostalCode: "69001", Country: "fr"}
	}
	tests := []struct {
		name       string
		upd        ProfileUpdate
		wantFields []string
	}{
		{name: "name only", upd: ProfileUpdate{Name: ptr(" Bob ")}},
		{name: "address only", upd: ProfileUpdate{ShippingAddress: good()}},
		{name: "nothing", upd: ProfileUpdate{}, wantFields: []string{"name"}},
		{name: "blank name", upd: ProfileUpdate{Name: ptr("   ")}, wantFields: []string{"name"}},
		{name: "long name", upd: ProfileUpdate{Name: ptr(strings.Repeat("é", MaxNameLen+1))}, wantFields: []string{"name"}},
		{name: "control characters", upd: ProfileUpdate{Name: ptr("a\x00b")}, wantFields: []string{"name"}},
		{name: "bad country and empty city", upd: ProfileUpdate{ShippingAddress: &Address{Line1: "x", PostalCode: "1", Country: "FRA"}},
			wantFields: []string{"shipping_address.city", "shipping_address.country"}},
		{name: "every address field missing", upd: ProfileUpdate{ShippingAddress: &Address{}},
			wantFields: []string{"shipping_address.line1", "shipping_address.city", "shipping_address.postal_code", "shipping_address.country"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.upd.Normalize()
			if len(tt.wantFields) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrValidation) {
				t.Fatalf("err = %v", err)
			}
			if len(ve.Fields) != len(tt.wantFields) {
				t.Fatalf("fields = %v, want %v", ve.Fields, tt.wantFields)
			}
			for _, f := range tt.wantFields {
				if ve.Fields[f] == "" {
					t.Fatalf("no message for %s in %v", f, ve.Fields)
				}
			}
		})
	}
	t.Run("normalizes", func(t *testing.T) {
		t.Parallel()
		u := ProfileUpdate{Name: ptr(" Bob "), ShippingAddress: good()}
		if err := u.Normalize(); err != nil {
			t.Fatal(err)
		}
		var p Profile
		u.Apply(&p)
		if p.Name != "Bob" || p.ShippingAddress.Line1 != "1 Main St" || p.ShippingAddress.Country != "FR" {
			t.Fatalf("profile = %+v", p)
		}
	})
}

func TestValidateRoleNames(t *testing.T) {
	t.Parallel()
	if _, err := ValidateRoleNames(nil); !errors.Is(err, ErrValidation) {
		t.Fatal("missing roles accepted")
	}
	if _, err := ValidateRoleNames([]string{"admin", " "}); !errors.Is(err, ErrValidation) {
		t.Fatal("blank role accepted")
	}
	got, err := ValidateRoleNames([]string{"support", "admin", "support"})
	if err != nil || len(got) != 2 || got[0] != "admin" {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := ValidateRoleNames([]string{}); err != nil || len(got) != 0 {
		t.Fatalf("empty list (remove every role): %v, %v", got, err)
	}
}

func TestModerationFreshTokensAfter(t *testing.T) {
	t.Parallel()
	m := Moderation{RevokedAt: time.Date(2025, 1, 1, 0, 0, 5, 999_000_000, time.UTC)}
	want := time.Date(2025, 1, 1, 0, 0, 6, 0, time.UTC)
	if got := m.FreshTokensAfter(); !got.Equal(want) {
		t.Fatalf("FreshTokensAfter = %v, want %v", got, want)
	}
	if !(Moderation{}).FreshTokensAfter().IsZero() {
		t.Fatal("never blocked: no wait")
	}
}
