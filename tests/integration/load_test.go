package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// placed is an order a client saw accepted (201), with the token that owns it.
type placed struct {
	id, tok string
}

// verifyOrders checks that every accepted order exists and, within d, has
// exactly one invoice; a second invoice fails at once.
func verifyOrders(t *testing.T, orders []placed, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var problems []string
	report := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, s)
	}
	work := make(chan placed)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for o := range work {
				r, err := api.TryCall(http.MethodGet, "orders", "/v1/orders/"+o.id, o.tok, nil)
				if err != nil || r.Status != http.StatusOK {
					report(fmt.Sprintf("accepted order %s is lost: %v %v", o.id, r, err))
					continue
				}
				for {
					invs, err := api.TryInvoicesOf(o.tok, o.id)
					if err == nil && len(invs) == 1 {
						break
					}
					if err == nil && len(invs) > 1 {
						report(fmt.Sprintf("order %s has %d invoices: %+v", o.id, len(invs), invs))
						break
					}
					if time.Now().After(deadline) {
						report(fmt.Sprintf("order %s: no invoice within %v (%v)", o.id, d, err))
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
	for _, o := range orders {
		work <- o
	}
	close(work)
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d of %d accepted orders are wrong; first: %v", len(problems), len(orders), problems[:min(10, len(problems))])
	}
}

// testLoad runs 200 concurrent clients placing and reading orders for
// IT_LOAD_SECONDS (default 30): no 5xx, and every accepted order is found
// with exactly one invoice. Throughput and latency are printed, not asserted.
func testLoad(t *testing.T) {
	secs := 30
	if v := os.Getenv("IT_LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("IT_LOAD_SECONDS=%q: want a positive number of seconds", v)
		}
		secs = n
	}
	const clients = 200
	toks := []string{api.Token(t, apiclient.Alice), api.Token(t, apiclient.Bob), api.Token(t, apiclient.Dave)}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		accepted []placed
		lat      []time.Duration
		fivexx   atomic.Int64
		other    atomic.Int64
		samples  []string
	)
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(samples) < 10 {
			samples = append(samples, s)
		}
	}
	skus := []string{"mug", "tea-green", "tea-black", "kettle"}
	started := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			tok := toks[c%len(toks)]
			var mine []placed
			var myLat []time.Duration
			do := func(method, path string, body any, want int) (apiclient.Response, bool) {
				t0 := time.Now()
				r, err := api.TryCall(method, "orders", path, tok, body)
				myLat = append(myLat, time.Since(t0))
				switch {
				case err != nil:
					other.Add(1)
					note(fmt.Sprintf("%s %s: %v", method, path, err))
					return r, false
				case r.Status >= 500:
					fivexx.Add(1)
					note(fmt.Sprintf("%s %s: %s", method, path, r))
					return r, false
				case r.Status != want:
					other.Add(1)
					note(fmt.Sprintf("%s %s: %s", method, path, r))
					return r, false
				}
				return r, true
			}
			for i := 0; ctx.Err() == nil; i++ {
				req := apiclient.OrderRequest{Items: []apiclient.Line{{SKU: skus[(c+i)%len(skus)], Quantity: 1 + i%3}}}
				r, ok := do(http.MethodPost, "/v1/orders", req, http.StatusCreated)
				if !ok {
					continue
				}
				id := jsonField(r.Body, "id")
				if id == "" {
					note("201 without an id: " + r.String())
					other.Add(1)
					continue
				}
				mine = append(mine, placed{id, tok})
				do(http.MethodGet, "/v1/orders/"+id, nil, http.StatusOK)
			}
			mu.Lock()
			accepted = append(accepted, mine...)
			lat = append(lat, myLat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(started)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Round(100 * time.Microsecond)
	}
	summary := fmt.Sprintf("load: %d clients, %v: %d requests (%.0f req/s), %d orders accepted (%.0f orders/s), p50 %v, p99 %v, max %v, 5xx %d, other failures %d",
		clients, elapsed.Round(time.Millisecond), len(lat), float64(len(lat))/elapsed.Seconds(), len(accepted),
		float64(len(accepted))/elapsed.Seconds(), pct(0.50), pct(0.99), pct(1), fivexx.Load(), other.Load())
	t.Log(summary)
	logf("%s", summary)
	if fivexx.Load() > 0 || other.Load() > 0 {
		t.Errorf("%d 5xx and %d other failures under load; samples: %v", fivexx.Load(), other.Load(), samples)
	}
	if len(accepted) == 0 {
		t.Fatal("no order was accepted under load")
	}
	verifyOrders(t, accepted, 60*time.Second)
}

// jsonField extracts one top-level string field without a struct.
func jsonField(body []byte, name string) string {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return ""
	}
	s, _ := m[name].(string)
	return s
}
