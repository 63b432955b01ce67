// Package mgmt is a small typed client for the part of the Auth0 Management
// API v2 the users service needs: users (list, get, patch), user roles (get,
// assign, remove) and roles (list).
//
// It speaks Auth0's wire format, so it works unchanged against a real tenant
// (https://TENANT/api/v2/) and against devtenant. Requests carry a bearer token
// for the Management API audience from an m2m.TokenSource, rate limits (429 with
// x-ratelimit-reset) and transient failures are retried within bounds, and
// error bodies are decoded into *Error.
package mgmt

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/authmesh/authmesh/pkg/authz/m2m"
)

// ErrNoToken wraps a failure to obtain a Management API token.
var ErrNoToken = errors.New("mgmt: no management API token")

// Config configures a Client.
//
//	c, err := mgmt.New(mgmt.Config{
//		BaseURL: "https://example.eu.auth0.com/api/v2/",
//		Tokens:  tokens, // client-credentials, audience = the Management API
//	})
type Config struct {
	BaseURL    string          // e.g. "http://localhost:8400/api/v2/"; required
	Tokens     m2m.TokenSource // required: the Management API audience; an m2m.Invalidator is told of a refused token
	HTTPClient *http.Client    // default: 10 s timeout
	// MaxRetries bounds retries after a 429, a 5xx or a transport error (default 3).
	MaxRetries int
	// MaxRetryWait is the longest the client waits for a rate-limit reset
	// before giving up with the 429 (default 10 s).
	MaxRetryWait time.Duration
	// Backoff is the first wait after a 5xx or transport error; it doubles with
	// jitter (default 200 ms).
	Backoff time.Duration
}

// Client calls the Management API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	tokens  m2m.TokenSource
	hc      *http.Client
	retries int
	maxWait time.Duration
	backoff time.Duration
	now     func() time.Time
}

// New returns a client or an error naming the missing or malformed setting.
func New(cfg Config) (*Client, error) {
	c := &Client{ // a zero setting takes its default
		tokens:  cfg.Tokens,
		hc:      cmp.Or(cfg.HTTPClient, &http.Client{Timeout: 10 * time.Second}),
		retries: cmp.Or(cfg.MaxRetries, 3),
		maxWait: cmp.Or(cfg.MaxRetryWait, 10*time.Second),
		backoff: cmp.Or(cfg.Backoff, 200*time.Millisecond),
		now:     time.Now,
	}
	switch {
	case c.retries < 0:
		return nil, errors.New("mgmt: MaxRetries must not be negative")
	case c.maxWait < 0 || c.backoff < 0:
		return nil, errors.New("mgmt: waits must not be negative")
	case cfg.Tokens == nil:
		return nil, errors.New("mgmt: Tokens is required")
	case cfg.BaseURL == "":
		return nil, errors.New("mgmt: BaseURL is required")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("mgmt: BaseURL %q is not an absolute http(s) URL", cfg.BaseURL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	c.base = u
	return c, nil
}

// User is a user as the Management API returns it (the fields this service reads).
type User struct {
	UserID        string         `json:"user_id"`
	Email         string         `json:"email,omitempty"`
	EmailVerified bool           `json:"email_verified,omitempty"`
	Name          string         `json:"name,omitempty"`
	Nickname      string         `json:"nickname,omitempty"`
	Picture       string         `json:"picture,omitempty"`
	Blocked       bool           `json:"blocked,omitempty"`
	CreatedAt     *time.Time     `json:"created_at,omitempty"`
	UpdatedAt     *time.Time     `json:"updated_at,omitempty"`
	LastLogin     *time.Time     `json:"last_login,omitempty"`
	AppMetadata   map[string]any `json:"app_metadata,omitempty"`
	UserMetadata  map[string]any `json:"user_metadata,omitempty"`
}

// UserUpdate is a PATCH body; nil fields are left out, and so unchanged.
type UserUpdate struct {
	Blocked  *bool   `json:"blocked,omitempty"`
	Name     *string `json:"name,omitempty"`
	Nickname *string `json:"nickname,omitempty"`
}

// UserList is the include_totals=true shape of GET /users.
type UserList struct {
	Start  int    `json:"start"`
	Limit  int    `json:"limit"`
	Length int    `json:"length"`
	Total  int    `json:"total"`
	Users  []User `json:"users"`
}

// ListUsersParams are GET /users's query parameters. Page is zero-based;
// PerPage is at most 100 in Auth0; Q is a Lucene query (e.g. `email:"a@b.c"`).
type ListUsersParams struct {
	Page          int
	PerPage       int
	IncludeTotals bool
	Q             string
}

// Role is a tenant role.
type Role struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// ListUsers returns one page of users. Without IncludeTotals Auth0 answers a
// bare array; the result then has only Users, Start and Length filled in.
func (c *Client) ListUsers(ctx context.Context, p ListUsersParams) (*UserList, error) {
	q := url.Values{}
	q.Set("page", strconv.Itoa(p.Page))
	if p.PerPage > 0 {
		q.Set("per_page", strconv.Itoa(p.PerPage))
	}
	q.Set("include_totals", strconv.FormatBool(p.IncludeTotals))
	if p.Q != "" {
		q.Set("q", p.Q)
		q.Set("search_engine", "v3")
	}
	if !p.IncludeTotals {
		var users []User
		if err := c.do(ctx, http.MethodGet, "users", q, nil, &users); err != nil {
			return nil, err
		}
		return &UserList{Start: p.Page * p.PerPage, Limit: p.PerPage, Length: len(users), Users: users}, nil
	}
	var out UserList
	if err := c.do(ctx, http.MethodGet, "users", q, nil, &out); err != nil {
		return nil, err
	}
	if out.Users == nil {
		out.Users = []User{}
	}
	return &out, nil
}

// GetUser returns one user.
func (c *Client) GetUser(ctx context.Context, id string) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, userPath(id), nil, nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// UpdateUser patches a user and returns it as updated.
func (c *Client) UpdateUser(ctx context.Context, id string, upd UserUpdate) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodPatch, userPath(id), nil, upd, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// rolePageSize is Auth0's largest page; the loops below stop at a short page.
const rolePageSize = 100

// maxRolePages bounds the paging loops against a server that ignores page.
const maxRolePages = 50

// ListRoles returns every role of the tenant.
func (c *Client) ListRoles(ctx context.Context) ([]Role, error) {
	return c.allRoles(ctx, "roles")
}

// GetUserRoles returns the roles assigned to a user.
func (c *Client) GetUserRoles(ctx context.Context, id string) ([]Role, error) {
	return c.allRoles(ctx, userPath(id)+"/roles")
}

func (c *Client) allRoles(ctx context.Context, path string) ([]Role, error) {
	var all []Role
	seen := map[string]bool{}
	for page := range maxRolePages {
		q := url.Values{"page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(rolePageSize)}}
		var roles []Role
		if err := c.do(ctx, http.MethodGet, path, q, nil, &roles); err != nil {
			return nil, err
		}
		fresh := 0
		for _, r := range roles {
			if !seen[r.ID] {
				seen[r.ID] = true
				all = append(all, r)
				fresh++
			}
		}
		if len(roles) < rolePageSize || fresh == 0 {
			break
		}
	}
	if all == nil {
		all = []Role{}
	}
	return all, nil
}

// AssignUserRoles adds roles (by id) to a user. Assigning a role the user
// already has is not an error in Auth0, so the call is safe to repeat.
func (c *Client) AssignUserRoles(ctx context.Context, id string, roleIDs []string) error {
	if len(roleIDs) == 0 {
		return nil
	}
	return c.do(ctx, http.MethodPost, userPath(id)+"/roles", nil, map[string][]string{"roles": roleIDs}, nil)
}

// RemoveUserRoles removes roles (by id) from a user.
func (c *Client) RemoveUserRoles(ctx context.Context, id string, roleIDs []string) error {
	if len(roleIDs) == 0 {
		return nil
	}
	return c.do(ctx, http.MethodDelete, userPath(id)+"/roles", nil, map[string][]string{"roles": roleIDs}, nil)
}

// userPath escapes the id as one path segment: "auth0|abc" → "auth0%7Cabc".
func userPath(id string) string { return "users/" + url.PathEscape(id) }

// maxBody bounds what the client reads from the tenant.
const maxBody = 4 << 20

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("mgmt: encode %s %s: %w", method, path, err)
		}
		body = b
	}
	// The path is already escaped; joining strings keeps "%7C" as sent.
	target := c.base.String() + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	backoff := c.backoff
	renewed := false
	for attempt := 0; ; attempt++ {
		wait, tok, err := c.once(ctx, method, target, body, out)
		if err == nil {
			return nil
		}
		// A 401 means the tenant no longer accepts the token (its signing key
		// was revoked, say): once, drop it and ask again with a fresh one.
		// This does not count as a retry.
		if inv, ok := c.tokens.(m2m.Invalidator); ok && !renewed && errors.Is(err, ErrUnauthorized) {
			inv.Invalidate(tok)
			renewed = true
			attempt--
			continue
		}
		if wait < 0 || attempt >= c.retries {
			return err
		}
		if wait == 0 {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff *= 2
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up waiting to retry: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// once sends one request with the token it returns. A nil error means
// success. Otherwise wait says what to do: < 0 do not retry, 0 retry after
// the backoff, > 0 retry after wait.
func (c *Client) once(ctx context.Context, method, target string, body []byte, out any) (time.Duration, string, error) {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		// Token fetch errors are retried by the token source itself.
		return -1, "", fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	wait, err := c.send(ctx, method, target, tok, body, out)
	return wait, tok, err
}

func (c *Client) send(ctx context.Context, method, target, tok string, body []byte, out any) (time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return -1, fmt.Errorf("mgmt: %s: %w", method, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("mgmt: %s %s: %w", method, req.URL.EscapedPath(), ctx.Err())
		}
		return 0, &Error{StatusCode: 0, Err: "transport_error", Message: err.Error(), Method: method, Path: req.URL.EscapedPath()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, &Error{StatusCode: resp.StatusCode, Err: "read_error", Message: err.Error(), Method: method, Path: req.URL.EscapedPath()}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return 0, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return -1, fmt.Errorf("mgmt: decode %s %s response: %w", method, req.URL.EscapedPath(), err)
		}
		return 0, nil
	}
	e := parseError(resp, data)
	e.Method, e.Path = method, req.URL.EscapedPath()
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		w := c.rateLimitWait(resp.Header)
		if w > c.maxWait {
			return -1, e
		}
		return w, e
	case resp.StatusCode >= 500:
		return 0, e
	default:
		return -1, e
	}
}

// rateLimitWait reads x-ratelimit-reset (Unix seconds at which the bucket
// refills), falling back to Retry-After (seconds). It returns 0 when neither
// names a future instant: the reset has one-second resolution and may already
// look past, so the caller's growing backoff spaces the retries instead.
func (c *Client) rateLimitWait(h http.Header) time.Duration {
	if v, err := strconv.ParseInt(h.Get("X-Ratelimit-Reset"), 10, 64); err == nil && v > 0 {
		return max(time.Unix(v, 0).Sub(c.now()), 0)
	}
	if v, err := strconv.Atoi(h.Get("Retry-After")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 0
}
