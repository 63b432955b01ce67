package tenant

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/authmesh/pkg/authz"
)

// mgmtError is the Management API v2 error body.
type mgmtError struct {
	StatusCode int    `json:"statusCode"`
	Error      string `json:"error"`
	Message    string `json:"message"`
	ErrorCode  string `json:"errorCode,omitempty"`
}

func writeMgmtError(w http.ResponseWriter, status int, message, code string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devtenant Management API"`)
	}
	writeJSON(w, status, mgmtError{StatusCode: status, Error: http.StatusText(status), Message: message, ErrorCode: code})
}

type mgmtHandler func(w http.ResponseWriter, r *http.Request, c *authz.Claims)

func (s *Server) mgmtRoutes(mux *http.ServeMux) {
	h := func(pattern, scope string, fn mgmtHandler) { mux.Handle(pattern, s.mgmt(scope, fn)) }
	h("GET /api/v2/users", "read:users", s.listUsers)
	h("GET /api/v2/users-by-email", "read:users", s.usersByEmail)
	h("GET /api/v2/users/{id}", "read:users", s.getUser)
	h("PATCH /api/v2/users/{id}", "update:users", s.patchUser)
	h("GET /api/v2/users/{id}/roles", "read:roles", s.getUserRoles)
	h("POST /api/v2/users/{id}/roles", "create:role_members", s.changeUserRoles(true))
	h("DELETE /api/v2/users/{id}/roles", "delete:role_members", s.changeUserRoles(false))
	h("GET /api/v2/roles", "read:roles", s.listRoles)
	h("GET /api/v2/roles/{id}", "read:roles", s.getRole)
	h("GET /api/v2/keys/signing", "read:signing_keys", s.listKeys)
	h("GET /api/v2/keys/signing/{kid}", "read:signing_keys", s.getKey)
	h("POST /api/v2/keys/signing/rotate", "create:signing_keys update:signing_keys", s.rotateKey)
	h("PUT /api/v2/keys/signing/{kid}/revoke", "update:signing_keys", s.revokeKey)
	mux.HandleFunc("/api/v2/", func(w http.ResponseWriter, r *http.Request) {
		writeMgmtError(w, http.StatusNotFound, "Not Found", "")
	})
}

// mgmt authenticates an M2M token for the Management API, applies the rate
// limit and requires every scope in scopes (space-separated).
func (s *Server) mgmt(scopes string, fn mgmtHandler) http.Handler {
	need := strings.Fields(scopes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearer(r)
		if !ok {
			writeMgmtError(w, http.StatusUnauthorized, "Missing authentication", "")
			return
		}
		c, err := s.verify(r.Context(), raw, s.model.MgmtAud)
		if err != nil {
			writeMgmtError(w, http.StatusUnauthorized, "Invalid token", "")
			return
		}
		note(r, "client_id", c.AZP)
		remaining, reset, allowed := s.limiter.take(c.AZP)
		h := w.Header()
		h.Set("x-ratelimit-limit", strconv.Itoa(s.limiter.limit))
		h.Set("x-ratelimit-remaining", strconv.Itoa(remaining))
		h.Set("x-ratelimit-reset", strconv.FormatInt(reset.Unix(), 10))
		if !allowed {
			h.Set("Retry-After", strconv.Itoa(max(1, int(time.Until(reset).Seconds()+0.999))))
			writeMgmtError(w, http.StatusTooManyRequests, "Global limit has been reached", "too_many_requests")
			return
		}
		for _, sc := range need {
			if !c.HasScope(sc) {
				writeMgmtError(w, http.StatusForbidden, "Insufficient scope, expected all of: "+strings.Join(need, ","), "insufficient_scope")
				return
			}
		}
		fn(w, r, c)
	})
}

// queryError is a message for the caller, worded as Auth0 words it.
type queryError string

func (e queryError) Error() string { return string(e) }

// paging reads page/per_page/include_totals as Auth0 does (page from 0, per_page ≤ 100).
func paging(r *http.Request) (page, perPage int, totals bool, err error) {
	q := r.URL.Query()
	perPage = 50
	if v := q.Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 0 {
			return 0, 0, false, queryError("Query validation error: 'page' must be an integer ≥ 0")
		}
	}
	if v := q.Get("per_page"); v != "" {
		if perPage, err = strconv.Atoi(v); err != nil || perPage < 1 || perPage > 100 {
			return 0, 0, false, queryError("Query validation error: 'per_page' must be an integer between 1 and 100")
		}
	}
	switch q.Get("include_totals") {
	case "", "false":
	case "true":
		totals = true
	default:
		return 0, 0, false, queryError("Query validation error: 'include_totals' must be true or false")
	}
	return page, perPage, totals, nil
}

func pageOf[T any](items []T, page, perPage int) []T {
	start := min(page*perPage, len(items))
	end := min(start+perPage, len(items))
	return items[start:end]
}

// readMgmtBody decodes a JSON object body.
func readMgmtBody(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeMgmtError(w, http.StatusRequestEntityTooLarge, "Payload too large", "payload_too_large")
		} else {
			writeMgmtError(w, http.StatusBadRequest, "Invalid request payload", "invalid_body")
		}
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		writeMgmtError(w, http.StatusBadRequest, "Payload validation error: 'Expected type object'", "invalid_body")
		return nil, false
	}
	return m, true
}

type rateLimiter struct {
	mu      sync.Mutex
	limit   int
	window  time.Duration
	now     func() time.Time
	windows map[string]*rateWindow
}

type rateWindow struct {
	start time.Time
	used  int
}

func newRateLimiter(limit int, window time.Duration, now func() time.Time) *rateLimiter {
	return &rateLimiter{limit: limit, window: window, now: now, windows: map[string]*rateWindow{}}
}

// take counts one request in key's fixed window.
func (l *rateLimiter) take(key string) (remaining int, reset time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	win := l.windows[key]
	if win == nil || !now.Before(win.start.Add(l.window)) {
		win = &rateWindow{start: now}
		l.windows[key] = win
	}
	reset = win.start.Add(l.window)
	if win.used >= l.limit {
		return 0, reset, false
	}
	win.used++
	return l.limit - win.used, reset, true
}
