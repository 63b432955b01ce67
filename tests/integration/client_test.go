package integration

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

const password = "dev-password"

// Dev users of deploy/dev (contract §2).
const (
	alice = "alice@authmesh.dev" // customer
	bob   = "bob@authmesh.dev"   // customer
	carol = "carol@authmesh.dev" // admin
	dave  = "dave@authmesh.dev"  // support
)

// flowDeadline is contract §6's bound for every cross-service flow.
const flowDeadline = 2 * time.Second

var httpClient = &http.Client{
	Timeout: 15 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	},
}

// tokenResult is devtenant's answer at /oauth/token.
type tokenResult struct {
	status      int
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// tokenRequest posts a form to devtenant's token endpoint.
func tokenRequest(form url.Values) (tokenResult, error) {
	resp, err := httpClient.PostForm(stack.url("devtenant")+"/oauth/token", form)
	if err != nil {
		return tokenResult{}, err
	}
	defer resp.Body.Close()
	var r tokenResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return tokenResult{}, fmt.Errorf("status %d, undecodable body: %v", resp.StatusCode, err)
	}
	r.status = resp.StatusCode
	return r, nil
}

// passwordGrant asks devtenant for a user's token with the public CLI client.
func passwordGrant(t *testing.T, email string) tokenResult {
	t.Helper()
	r, err := tokenRequest(url.Values{
		"grant_type": {"password"},
		"username":   {email},
		"password":   {password},
		"client_id":  {"authmesh-cli"},
		"audience":   {audience},
		"scope":      {"openid profile email"},
	})
	if err != nil {
		t.Fatalf("token for %s: %v", email, err)
	}
	return r
}

// token is a fresh access token for a dev user.
func token(t *testing.T, email string) string {
	t.Helper()
	r := passwordGrant(t, email)
	if r.status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("token for %s: status %d: %s: %s", email, r.status, r.Error, r.Description)
	}
	return r.AccessToken
}

// mgmtToken is tenant-admin's Management API token (contract §2).
func mgmtToken(t *testing.T) string {
	t.Helper()
	r, err := tokenRequest(url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {"tenant-admin"},
		"client_secret": {"tenant-admin-dev-secret"},
		"audience":      {mgmtAud},
	})
	if err != nil || r.status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("tenant-admin token: %v %d %s %s", err, r.status, r.Error, r.Description)
	}
	return r.AccessToken
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	b := bytes.TrimSpace(r.body)
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// call sends a request to a container by name; body, when not nil, is JSON.
func call(t *testing.T, method, name, path, tok string, body any, hdr ...string) response {
	t.Helper()
	r, err := tryCall(method, name, path, tok, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, name, path, err)
	}
	return r
}

// tryCall is call for goroutines, which must not call t.Fatal.
func tryCall(method, name, path, tok string, body any, hdr ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, stack.url(name)+path, rd)
	if err != nil {
		return response{}, err
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
	resp, err := httpClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// callJSON is call that expects the status want and decodes the body into out.
func callJSON(t *testing.T, method, name, path, tok string, body any, want int, out any, hdr ...string) response {
	t.Helper()
	r := call(t, method, name, path, tok, body, hdr...)
	if r.status != want {
		t.Fatalf("%s %s %s: got %s, want %d", method, name, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s %s: decoding %s: %v", method, name, path, r, err)
		}
	}
	return r
}

// Contract §4 shapes, as far as the tests read them.
type order struct {
	ID         string `json:"id"`
	UserID     string `json:"user_id"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

type invoice struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	UserID      string `json:"user_id"`
	Status      string `json:"status"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

type me struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

type line struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type orderRequest struct {
	Items []line `json:"items"`
}

// mugs is an order of n mugs (1200 cents each in the seed catalog).
func mugs(n int) orderRequest { return orderRequest{Items: []line{{SKU: "mug", Quantity: n}}} }

func placeOrder(t *testing.T, tok string, req orderRequest) order {
	t.Helper()
	var o order
	callJSON(t, http.MethodPost, "orders", "/v1/orders", tok, req, http.StatusCreated, &o)
	if o.ID == "" || o.Status != "pending" {
		t.Fatalf("new order %+v: want an id and status pending", o)
	}
	return o
}

func getOrder(t *testing.T, tok, id string) order {
	t.Helper()
	var o order
	callJSON(t, http.MethodGet, "orders", "/v1/orders/"+url.PathEscape(id), tok, nil, http.StatusOK, &o)
	return o
}

func getInvoice(t *testing.T, tok, id string) invoice {
	t.Helper()
	var inv invoice
	callJSON(t, http.MethodGet, "billing", "/v1/invoices/"+url.PathEscape(id), tok, nil, http.StatusOK, &inv)
	return inv
}

// tryInvoicesOf lists the invoices of one order: the caller's own, or
// forUser's (which needs read:all-invoices).
func tryInvoicesOf(tok, orderID string, forUser ...string) ([]invoice, error) {
	q := url.Values{"order_id": {orderID}}
	if len(forUser) > 0 {
		q.Set("user_id", forUser[0])
	}
	r, err := tryCall(http.MethodGet, "billing", "/v1/invoices?"+q.Encode(), tok, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/invoices?order_id=%s: %s", orderID, r)
	}
	var invs []invoice
	if err := json.Unmarshal(r.body, &invs); err != nil {
		return nil, fmt.Errorf("decoding %s: %v", r, err)
	}
	return invs, nil
}

func invoicesOf(t *testing.T, tok, orderID string, forUser ...string) []invoice {
	t.Helper()
	invs, err := tryInvoicesOf(tok, orderID, forUser...)
	if err != nil {
		t.Fatal(err)
	}
	return invs
}

// eventually polls check until it reports done, failing the test with the
// last state check described if that does not happen within d.
func eventually(t *testing.T, d time.Duration, what string, check func() (done bool, state string)) {
	t.Helper()
	start := time.Now()
	for {
		done, state := check()
		if done {
			return
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v; last: %s", what, d, state)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitInvoice waits for the order's one invoice in status want and returns it;
// it fails as soon as a second invoice for the order shows up.
func waitInvoice(t *testing.T, tok, orderID, want string, d time.Duration, forUser ...string) invoice {
	t.Helper()
	var got invoice
	eventually(t, d, fmt.Sprintf("order %s's invoice %s", orderID, want), func() (bool, string) {
		invs := invoicesOf(t, tok, orderID, forUser...)
		if len(invs) > 1 {
			t.Fatalf("order %s has %d invoices, want 1: %+v", orderID, len(invs), invs)
		}
		if len(invs) == 0 {
			return false, "no invoice"
		}
		got = invs[0]
		return got.Status == want, fmt.Sprintf("%+v", got)
	})
	if got.OrderID != orderID {
		t.Fatalf("invoice %+v answers ?order_id=%s", got, orderID)
	}
	return got
}

// waitOrder waits until the order has status want.
func waitOrder(t *testing.T, tok, id, want string, d time.Duration) order {
	t.Helper()
	var got order
	eventually(t, d, fmt.Sprintf("order %s %s", id, want), func() (bool, string) {
		got = getOrder(t, tok, id)
		return got.Status == want, got.Status
	})
	return got
}

func whoami(t *testing.T, tok string) me {
	t.Helper()
	var m me
	callJSON(t, http.MethodGet, "users", "/v1/me", tok, nil, http.StatusOK, &m)
	if m.UserID == "" {
		t.Fatal("GET /v1/me: empty user_id")
	}
	return m
}

// wantInvalidToken checks contract §5's answer to a refused token.
func wantInvalidToken(r response) error {
	if r.status != http.StatusUnauthorized {
		return fmt.Errorf("got %s, want 401", r)
	}
	if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		return fmt.Errorf("WWW-Authenticate %q, want error=\"invalid_token\"", h)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error == "" {
		return fmt.Errorf("body %s: want {\"error\",\"message\"}", r)
	}
	return nil
}

// authedRoutes is one token-protected read per service.
var authedRoutes = []struct{ svc, path string }{
	{"users", "/v1/me"},
	{"orders", "/v1/orders"},
	{"billing", "/v1/invoices"},
}
