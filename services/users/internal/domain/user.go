// Package domain holds the users service's entities, their rules and the
// sentinel errors the rest of the service maps to responses.
package domain

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/authmesh/authmesh/pkg/platform/fault"
)

// Sentinel errors: fault's kinds. Adapters wrap them with %w; the HTTP error
// handler maps them to status codes.
var (
	ErrNotFound   = fault.ErrNotFound
	ErrConflict   = fault.ErrConflict
	ErrValidation = fault.ErrInvalid
	// ErrUnavailable marks a dependency (the tenant, NATS) that failed in a way
	// a retry may fix.
	ErrUnavailable = fault.ErrUnavailable
)

// ValidationError lists field-level problems (field path in JSON names →
// message). It matches ErrValidation.
type ValidationError = fault.ValidationError

// User is a tenant user merged with the locally kept profile.
type User struct {
	ID              string
	Email           string
	Name            string
	Roles           []string
	Blocked         bool
	ShippingAddress *Address
}

// Address is a shipping address.
type Address struct {
	Line1      string
	City       string
	PostalCode string
	Country    string // ISO 3166-1 alpha-2, upper case
}

// Profile is what the service keeps about a user beyond the tenant's record.
type Profile struct {
	UserID          string
	Name            string // overrides the tenant's name when not empty
	ShippingAddress *Address
	UpdatedAt       time.Time
	// Tenant is the last successful tenant read of the user (nil: none yet).
	Tenant *TenantSnapshot
}

// TenantSnapshot is a user as the tenant had it at ReadAt. It answers the
// caller's own reads, marked stale, while the tenant cannot be reached; the
// writes never decide on it.
type TenantSnapshot struct {
	Email   string
	Name    string
	Roles   []string
	Blocked bool
	ReadAt  time.Time
}

// SnapshotOf takes the tenant fields of u as read at at.
func SnapshotOf(u User, at time.Time) TenantSnapshot {
	return TenantSnapshot{Email: u.Email, Name: u.Name, Roles: slices.Clone(u.Roles), Blocked: u.Blocked, ReadAt: at}
}

// SameAs reports whether both hold the same tenant fields, whenever read.
func (s TenantSnapshot) SameAs(o TenantSnapshot) bool {
	return s.Email == o.Email && s.Name == o.Name && s.Blocked == o.Blocked && slices.Equal(s.Roles, o.Roles)
}

// User is the snapshot as the tenant's view of user id (no profile merged).
func (s TenantSnapshot) User(id string) User {
	return User{ID: id, Email: s.Email, Name: s.Name, Roles: slices.Clone(s.Roles), Blocked: s.Blocked}
}

// ApplyTo merges the profile into the tenant's view of the user.
func (p Profile) ApplyTo(u *User) {
	if p.Name != "" {
		u.Name = p.Name
	}
	if p.ShippingAddress != nil {
		a := *p.ShippingAddress
		u.ShippingAddress = &a
	}
}

// ProfileUpdate is a partial change to a profile: nil fields stay as they are.
type ProfileUpdate struct {
	Name            *string
	ShippingAddress *Address
}

// Limits on profile fields. They are generous for real addresses and tight
// enough that a profile stays a small KV value.
const (
	MaxNameLen  = 100
	MaxLine1Len = 200
	MaxCityLen  = 100
	MaxPostLen  = 16
)

// Normalize trims the update's strings and upper-cases the country, then
// validates it. Field paths in the error use the JSON names of the API.
func (u *ProfileUpdate) Normalize() error {
	fields := map[string]string{}
	if u.Name == nil && u.ShippingAddress == nil {
		fields["name"] = "provide name and/or shipping_address"
	}
	if u.Name != nil {
		n := strings.TrimSpace(*u.Name)
		u.Name = &n
		checkText(fields, "name", n, MaxNameLen)
	}
	if a := u.ShippingAddress; a != nil {
		a.Line1 = strings.TrimSpace(a.Line1)
		a.City = strings.TrimSpace(a.City)
		a.PostalCode = strings.TrimSpace(a.PostalCode)
		a.Country = strings.ToUpper(strings.TrimSpace(a.Country))
		checkText(fields, "shipping_address.line1", a.Line1, MaxLine1Len)
		checkText(fields, "shipping_address.city", a.City, MaxCityLen)
		checkText(fields, "shipping_address.postal_code", a.PostalCode, MaxPostLen)
		if !isCountryCode(a.Country) {
			fields["shipping_address.country"] = "must be a two-letter ISO 3166-1 country code"
		}
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

// Apply changes p by u (which must have been normalized).
func (u ProfileUpdate) Apply(p *Profile) {
	if u.Name != nil {
		p.Name = *u.Name
	}
	if u.ShippingAddress != nil {
		a := *u.ShippingAddress
		p.ShippingAddress = &a
	}
}

func checkText(fields map[string]string, path, v string, maxLen int) {
	switch {
	case v == "":
		fields[path] = "must not be empty"
	case utf8.RuneCountInString(v) > maxLen:
		fields[path] = fmt.Sprintf("must be at most %d characters", maxLen)
	case strings.ContainsFunc(v, isControl):
		fields[path] = "must not contain control characters"
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isCountryCode(s string) bool {
	return len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z'
}

// Page is one page of the tenant's users.
type Page struct {
	Users   []User
	Page    int // zero-based, as in Auth0
	PerPage int
	Total   int
}

// Paging limits mirror the Management API's (per_page at most 100).
const (
	DefaultPerPage = 50
	MaxPerPage     = 100
)

// ValidateUserID rejects ids that cannot be tenant user ids before they reach
// the tenant (Auth0 ids are "provider|id", at most a few hundred bytes).
func ValidateUserID(id string) error {
	if id == "" || len(id) > 256 || !utf8.ValidString(id) || strings.ContainsFunc(id, isControl) {
		return &ValidationError{Fields: map[string]string{"user_id": "is not a valid user id"}}
	}
	return nil
}

// ValidateRoleNames checks a role assignment request's shape; whether the
// roles exist is the tenant's to say.
func ValidateRoleNames(names []string) ([]string, error) {
	if names == nil {
		return nil, &ValidationError{Fields: map[string]string{"roles": "is required (an empty list removes every role)"}}
	}
	out := make([]string, 0, len(names))
	for i, n := range names {
		n = strings.TrimSpace(n)
		if n == "" || len(n) > 100 {
			return nil, &ValidationError{Fields: map[string]string{fmt.Sprintf("roles[%d]", i): "must be a role name"}}
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// UnknownRolesError names roles the tenant does not have. It matches ErrValidation.
func UnknownRolesError(names []string) error {
	return &ValidationError{Fields: map[string]string{"roles": "unknown role(s): " + strings.Join(names, ", ")}}
}
