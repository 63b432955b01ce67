// Package apiclient is the contract's HTTP client for the system tests:
// tests/flows (the services as processes) and tests/integration (the
// services in containers) drive the same public APIs through it. It asks
// devtenant for tokens (contract §3), calls the services, reads the
// contract §4 shapes and waits for the flows of §6; each suite says only
// where the services are and which http.Client reaches them.
package apiclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Dev users of deploy/dev/users.yaml (contract §2), who all share Password.
const (
	Alice = "alice@authmesh.dev" // customer
	Bob   = "bob@authmesh.dev"   // customer
	Carol = "carol@authmesh.dev" // admin
	Dave  = "dave@authmesh.dev"  // support

	Password = "dev-password"
)

// Audience is the API's audience, as the services expect it in user tokens.
const Audience = "https://api.authmesh.dev"

// FlowDeadline is contract §6's bound for every cross-service flow.
const FlowDeadline = 2 * time.Second

// Client reaches one running system. Both fields are required.
type Client struct {
	// HTTP sends every request.
	HTTP *http.Client
	// BaseURL is the base URL, without a trailing slash, of a service by
	// name: "users", "orders", "billing", "tts" or "devtenant". It is asked
	// on every request, so a restarted service may move.
	BaseURL func(name string) string
}

// TokenResult is devtenant's answer at /oauth/token.
type TokenResult struct {
	Status      int    `json:"-"`
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// TokenRequest posts a form to devtenant's token endpoint.
func (c *Client) TokenRequest(form url.Values) (TokenResult, error) {
	resp, err := c.HTTP.PostForm(c.BaseURL("devtenant")+"/oauth/token", form)
	if err != nil {
		return TokenResult{}, err
	}
	defer resp.Body.Close()
	var r TokenResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return TokenResult{}, fmt.Errorf("status %d, undecodable body: %v", resp.StatusCode, err)
	}
	r.Status = resp.StatusCode
	return r, nil
}

// PasswordGrant asks devtenant for a user's token with the public CLI
// client, as a developer would with curl (contract §3).
func (c *Client) PasswordGrant(t testing.TB, email string) TokenResult {
	t.Helper()
	r, err := c.TokenRequest(url.Values{
		"grant_type": {"password"},
		"username":   {email},
		"password":   {Password},
		"client_id":  {"authmesh-cli"},
		"audience":   {Audience},
		"scope":      {"openid profile email offline_access"},
	})
	if err != nil {
		t.Fatalf("token for %s: %v", email, err)
	}
	return r
}

// Token is a fresh access token for a dev user.
func (c *Client) Token(t testing.TB, email string) string {
	t.Helper()
	r := c.PasswordGrant(t, email)
	if r.Status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("token for %s: status %d: %s: %s", email, r.Status, r.Error, r.Description)
	}
	return r.AccessToken
}

// Response is an HTTP answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r Response) String() string {
	b := bytes.TrimSpace(r.Body)
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s", r.Status, b)
}

// Call sends a request to a service by name; body, when not nil, is sent as
// JSON, and hdr holds further header names and values, in pairs.
func (c *Client) Call(t testing.TB, method, svc, path, tok string, body any, hdr ...string) Response {
	t.Helper()
	r, err := c.TryCall(method, svc, path, tok, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, svc, path, err)
	}
	return r
}

// TryCall is Call for goroutines, which must not call t.Fatal.
func (c *Client) TryCall(method, svc, path, tok string, body any, hdr ...string) (Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.BaseURL(svc)+path, rd)
	if err != nil {
		return Response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return Response{}, err
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// CallJSON is Call that expects the status want and decodes the body into
// out, when out is not nil.
func (c *Client) CallJSON(t testing.TB, method, svc, path, tok string, body any, want int, out any, hdr ...string) Response {
	t.Helper()
	r := c.Call(t, method, svc, path, tok, body, hdr...)
	if r.Status != want {
		t.Fatalf("%s %s %s: got %s, want %d", method, svc, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s %s %s: decoding %s: %v", method, svc, path, r, err)
		}
	}
	return r
}

// WantInvalidToken checks contract §5's answer to a refused token.
func WantInvalidToken(r Response) error {
	if r.Status != http.StatusUnauthorized {
		return fmt.Errorf("got %s, want 401", r)
	}
	if h := r.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		return fmt.Errorf("WWW-Authenticate %q, want error=\"invalid_token\"", h)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || body.Error == "" {
		return fmt.Errorf("body %s: want {\"error\",\"message\"}", r)
	}
	return nil
}

// Route is one token-protected read.
type Route struct{ Svc, Path string }

// AuthedRoutes is one token-protected read per service.
var AuthedRoutes = []Route{
	{"users", "/v1/me"},
	{"orders", "/v1/orders"},
	{"billing", "/v1/invoices"},
}
