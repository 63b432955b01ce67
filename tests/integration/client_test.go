package integration

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// httpClient keeps many idle connections: the load scenarios call the
// containers' published ports from hundreds of goroutines.
var httpClient = &http.Client{
	Timeout: 15 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	},
}

// api reaches the containers at their published ports.
var api = &apiclient.Client{
	HTTP:    httpClient,
	BaseURL: func(name string) string { return stack.url(name) },
}

// mgmtToken is tenant-admin's Management API token (contract §2).
func mgmtToken(t *testing.T) string {
	t.Helper()
	r, err := api.TokenRequest(url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {"tenant-admin"},
		"client_secret": {"tenant-admin-dev-secret"},
		"audience":      {mgmtAud},
	})
	if err != nil || r.Status != http.StatusOK || r.AccessToken == "" {
		t.Fatalf("tenant-admin token: %v %d %s %s", err, r.Status, r.Error, r.Description)
	}
	return r.AccessToken
}
