package flows

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

// Dev users of deploy/dev/users.yaml.
const (
	alice = "alice@authmesh.dev" // customer
	bob   = "bob@authmesh.dev"   // customer
	carol = "carol@authmesh.dev" // admin
	dave  = "dave@authmesh.dev"  // support
)

var httpClient = &http.Client{Timeout: 10 * time.Second}

// tokenResult is devtenant's answer to the password grant.
type tokenResult struct {
	status      int
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// passwordGrant asks devtenant for a user's token with the public CLI
// client, as a developer would with curl (contract §3).
func passwordGrant(t *testing.T, email string) tokenResult {
	t.Helper()
	form := url.Values{
		"grant_type": {"password"},
		"username":   {email},
		"password":   {password},
		"client_id":  {"authmesh-cli"},
		"audience":   {audience},
		"scope":      {"openid profile email offline_access"},
	}
	resp, err := httpClient.PostForm(stack.tenantURL+"oauth/token", form)
	if err != nil {
		t.Fatalf("token for %s: %v", email, err)
	}
	defer resp.Body.Close()
	var r tokenResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		t.Fatalf("token for %s: status %d, undecodable body: %v", email, resp.StatusCode, err)
	}
	r.status = resp.StatusCode
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

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

// call sends a request to a service; body, when not nil, is sent as JSON.
func call(t *testing.T, method, svc, path, tok string, body any, hdr ...string) response {
	t.Helper()
	r, err := tryCall(method, svc, path, tok, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, svc, path, err)
	}
	return r
}

// tryCall is call for goroutines, which must not call t.Fatal.
func tryCall(method, svc, path, tok string, body any, hdr ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, stack.services[svc].url(path), rd)
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// callJSON is call that expects the status want and decodes the body into out.
func callJSON(t *testing.T, method, svc, path, tok string, body any, want int, out any, hdr ...string) response {
	t.Helper()
	r := call(t, method, svc, path, tok, body, hdr...)
	if r.status != want {
		t.Fatalf("%s %s %s: got %s, want %d", method, svc, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s %s: decoding %s: %v", method, svc, path, r, err)
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
	Items      []struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	} `json:"items"`
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

// invoicesOf lists the order's invoices; forUser, when set, names the owner
// (for callers with read:all-invoices: a plain list holds only their own).
func invoicesOf(t *testing.T, tok, orderID string, forUser ...string) []invoice {
	t.Helper()
	q := url.Values{"order_id": {orderID}}
	if len(forUser) > 0 {
		q.Set("user_id", forUser[0])
	}
	var invs []invoice
	callJSON(t, http.MethodGet, "billing", "/v1/invoices?"+q.Encode(), tok, nil, http.StatusOK, &invs)
	return invs
}

// flowDeadline is contract §6's bound for every cross-service flow.
const flowDeadline = 2 * time.Second

// eventually polls check until it reports done, failing the test with the
// last state check described if that does not happen within d.
func eventually(t *testing.T, d time.Duration, what string, check func() (done bool, state string)) {
	t.Helper()
	start := time.Now()
	var state string
	for {
		var done bool
		done, state = check()
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

// wantInvalidToken checks contract §5's answer to a refused token.
func wantInvalidToken(r response) error {
	if r.status != http.StatusUnauthorized {
		return fmt.Errorf("got %s, want 401", r)
	}
	if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		return fmt.Errorf("WWW-Authenticate %q, want error=\"invalid_token\"", h)
	}
	return nil
}
