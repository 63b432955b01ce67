package tenant

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
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

type mgmtHandler func(w http.ResponseWriter, r *http.Request, c *verifiedClaims)

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
		c, err := s.verify(raw, s.model.MgmtAud)
		if err != nil {
			writeMgmtError(w, http.StatusUnauthorized, "Invalid token", "")
			return
		}
		note(r, "client_id", c.Azp)
		remaining, reset, allowed := s.limiter.take(c.Azp)
		h := w.Header()
		h.Set("x-ratelimit-limit", strconv.Itoa(s.limiter.limit))
		h.Set("x-ratelimit-remaining", strconv.Itoa(remaining))
		h.Set("x-ratelimit-reset", strconv.FormatInt(reset.Unix(), 10))
		if !allowed {
			h.Set("Retry-After", strconv.Itoa(max(1, int(time.Until(reset).Seconds()+0.999))))
			writeMgmtError(w, http.StatusTooManyRequests, "Global limit has been reached", "too_many_requests")
			return
		}
		have := strings.Fields(c.Scope)
		for _, sc := range need {
			if !slices.Contains(have, sc) {
				writeMgmtError(w, http.StatusForbidden, "Insufficient scope, expected all of: "+strings.Join(need, ","), "insufficient_scope")
				return
			}
		}
		fn(w, r, c)
	})
}

// --- rate limit -----------------------------------------------------------------

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

// --- users ----------------------------------------------------------------------

func (s *Server) userJSON(u userRecord) map[string]any {
	out := map[string]any{
		"user_id":        u.ID,
		"email":          u.Email,
		"email_verified": u.EmailVerified,
		"name":           u.Name,
		"nickname":       u.Nickname,
		"blocked":        u.Blocked,
		"created_at":     u.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z"),
		"updated_at":     u.UpdatedAt.UTC().Format("2006-01-02T15:04:05.000Z"),
		"logins_count":   u.LoginsCount,
		"identities": []map[string]any{{
			"connection": Connection, "provider": "auth0", "user_id": strings.TrimPrefix(u.ID, "auth0|"), "isSocial": false,
		}},
		"app_metadata":  orEmpty(u.AppMetadata),
		"user_metadata": orEmpty(u.UserMetadata),
	}
	if u.GivenName != "" {
		out["given_name"] = u.GivenName
	}
	if u.FamilyName != "" {
		out["family_name"] = u.FamilyName
	}
	if u.LastLogin != nil {
		out["last_login"] = u.LastLogin.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return out
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
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

// matchQuery understands the searches the services make: email:"x" (or
// email:x), user_id:"x", blocked:true|false, and bare text matched against
// email and name.
func matchQuery(u userRecord, q string) (bool, error) {
	for _, term := range strings.Fields(q) {
		if term == "AND" {
			continue
		}
		field, val, hasField := strings.Cut(term, ":")
		val = strings.Trim(val, `"`)
		if !hasField {
			t := strings.ToLower(strings.Trim(term, `"*`))
			if !strings.Contains(u.Email, t) && !strings.Contains(strings.ToLower(u.Name), t) {
				return false, nil
			}
			continue
		}
		switch field {
		case "email":
			if !strings.EqualFold(u.Email, val) {
				return false, nil
			}
		case "user_id":
			if u.ID != val {
				return false, nil
			}
		case "blocked":
			if strconv.FormatBool(u.Blocked) != val {
				return false, nil
			}
		case "name":
			if !strings.EqualFold(u.Name, val) {
				return false, nil
			}
		default:
			return false, queryError(fmt.Sprintf("Query validation error: devtenant does not search by %q; use email, user_id, name or blocked", truncate(field, 40)))
		}
	}
	return true, nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	page, perPage, totals, err := paging(r)
	if err != nil {
		writeMgmtError(w, http.StatusBadRequest, err.Error(), "invalid_query_string")
		return
	}
	q := r.URL.Query().Get("q")
	out := []map[string]any{}
	for _, u := range s.store.allUsers() {
		ok, err := matchQuery(u, q)
		if err != nil {
			writeMgmtError(w, http.StatusBadRequest, err.Error(), "invalid_query_string")
			return
		}
		if ok {
			out = append(out, s.userJSON(u))
		}
	}
	sel := pageOf(out, page, perPage)
	if !totals {
		writeJSON(w, http.StatusOK, sel)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"start": page * perPage, "limit": perPage, "length": len(sel), "total": len(out), "users": sel})
}

func (s *Server) usersByEmail(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeMgmtError(w, http.StatusBadRequest, "Query validation error: Missing required property: email", "invalid_query_string")
		return
	}
	out := []map[string]any{}
	if u, ok := s.store.userByEmail(strings.ToLower(email)); ok {
		out = append(out, s.userJSON(u))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) userFromPath(w http.ResponseWriter, r *http.Request) (userRecord, bool) {
	u, ok := s.store.userByID(r.PathValue("id"))
	if !ok {
		writeMgmtError(w, http.StatusNotFound, "The user does not exist.", "inexistent_user")
	}
	return u, ok
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	if u, ok := s.userFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, s.userJSON(u))
	}
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

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request, c *verifiedClaims) {
	id := r.PathValue("id")
	if _, ok := s.userFromPath(w, r); !ok {
		return
	}
	body, ok := readMgmtBody(w, r)
	if !ok {
		return
	}
	if len(body) == 0 {
		writeMgmtError(w, http.StatusBadRequest, "Payload validation error: 'Too few properties defined (0), minimum 1'", "invalid_body")
		return
	}
	var (
		blocked       *bool
		strs          = map[string]*string{}
		appMD, userMD map[string]any
	)
	for _, k := range sortedKeys(body) {
		v := body[k]
		switch k {
		case "blocked":
			var b bool
			if json.Unmarshal(v, &b) != nil {
				writeMgmtError(w, http.StatusBadRequest, "Payload validation error: 'Expected type boolean' on property blocked", "invalid_body")
				return
			}
			blocked = &b
		case "name", "nickname", "given_name", "family_name":
			var sv string
			if json.Unmarshal(v, &sv) != nil || len(sv) > 300 {
				writeMgmtError(w, http.StatusBadRequest, fmt.Sprintf("Payload validation error: 'Expected type string (max 300)' on property %s", k), "invalid_body")
				return
			}
			strs[k] = &sv
		case "app_metadata", "user_metadata":
			var md map[string]any
			if json.Unmarshal(v, &md) != nil || md == nil {
				writeMgmtError(w, http.StatusBadRequest, fmt.Sprintf("Payload validation error: 'Expected type object' on property %s", k), "invalid_body")
				return
			}
			if k == "app_metadata" {
				appMD = md
			} else {
				userMD = md
			}
		case "email", "password", "connection", "email_verified", "username", "phone_number":
			writeMgmtError(w, http.StatusBadRequest, fmt.Sprintf("devtenant does not support changing %s; edit deploy/dev/users.yaml instead", k), "operation_not_supported")
			return
		default:
			writeMgmtError(w, http.StatusBadRequest, fmt.Sprintf("Payload validation error: 'Additional properties not allowed: %s'", truncate(k, 60)), "invalid_body")
			return
		}
	}
	u, err := s.store.update(id, func(ch *userChange, _ userRecord) {
		if blocked != nil {
			ch.Blocked = blocked
		}
		if v, ok := strs["name"]; ok {
			ch.Name = v
		}
		if v, ok := strs["nickname"]; ok {
			ch.Nickname = v
		}
		if v, ok := strs["given_name"]; ok {
			ch.GivenName = v
		}
		if v, ok := strs["family_name"]; ok {
			ch.FamilyName = v
		}
		ch.AppMetadata = mergeMetadata(ch.AppMetadata, appMD)
		ch.UserMetadata = mergeMetadata(ch.UserMetadata, userMD)
	})
	if err != nil {
		s.storeFailed(w, r, err)
		return
	}
	if blocked != nil {
		note(r, "user_id", id, "blocked", *blocked)
	}
	writeJSON(w, http.StatusOK, s.userJSON(u))
}

// mergeMetadata merges top-level keys as Auth0 does; a null value removes a key.
func mergeMetadata(dst, patch map[string]any) map[string]any {
	if patch == nil {
		return dst
	}
	out := map[string]any{}
	for k, v := range dst {
		out[k] = v
	}
	for k, v := range patch {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func (s *Server) storeFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errUserNotFound) {
		writeMgmtError(w, http.StatusNotFound, "The user does not exist.", "inexistent_user")
		return
	}
	note(r, "store_error", err.Error())
	writeMgmtError(w, http.StatusServiceUnavailable, "The change could not be saved; try again", "temporarily_unavailable")
}

// --- roles ----------------------------------------------------------------------

func (s *Server) roleJSON(role *Role) map[string]any {
	return map[string]any{"id": role.ID, "name": role.Name, "description": role.Description}
}

func (s *Server) roleByID(id string) *Role {
	for _, name := range s.model.RoleOrder {
		if role := s.model.Roles[name]; role.ID == id {
			return role
		}
	}
	return nil
}

func (s *Server) writeRoles(w http.ResponseWriter, r *http.Request, names []string) {
	page, perPage, totals, err := paging(r)
	if err != nil {
		writeMgmtError(w, http.StatusBadRequest, err.Error(), "invalid_query_string")
		return
	}
	all := []map[string]any{}
	for _, n := range names {
		if role := s.model.Roles[n]; role != nil {
			all = append(all, s.roleJSON(role))
		}
	}
	sel := pageOf(all, page, perPage)
	if !totals {
		writeJSON(w, http.StatusOK, sel)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"start": page * perPage, "limit": perPage, "total": len(all), "roles": sel})
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	filter := strings.ToLower(r.URL.Query().Get("name_filter"))
	names := slices.DeleteFunc(slices.Clone(s.model.RoleOrder), func(n string) bool {
		return filter != "" && !strings.Contains(strings.ToLower(n), filter)
	})
	s.writeRoles(w, r, names)
}

func (s *Server) getRole(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	role := s.roleByID(r.PathValue("id"))
	if role == nil {
		writeMgmtError(w, http.StatusNotFound, "The role does not exist.", "inexistent_role")
		return
	}
	writeJSON(w, http.StatusOK, s.roleJSON(role))
}

func (s *Server) getUserRoles(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	if u, ok := s.userFromPath(w, r); ok {
		s.writeRoles(w, r, s.inRoleOrder(u.Roles))
	}
}

func (s *Server) inRoleOrder(names []string) []string {
	return slices.DeleteFunc(slices.Clone(s.model.RoleOrder), func(n string) bool { return !slices.Contains(names, n) })
}

func (s *Server) changeUserRoles(add bool) mgmtHandler {
	return func(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
		id := r.PathValue("id")
		if _, ok := s.userFromPath(w, r); !ok {
			return
		}
		body, ok := readMgmtBody(w, r)
		if !ok {
			return
		}
		var ids []string
		if raw, has := body["roles"]; !has || json.Unmarshal(raw, &ids) != nil || len(ids) == 0 || len(body) != 1 {
			writeMgmtError(w, http.StatusBadRequest, `Payload validation error: expected {"roles":["rol_..."]} with at least one role id`, "invalid_body")
			return
		}
		var names []string
		for _, rid := range ids {
			role := s.roleByID(rid)
			if role == nil {
				writeMgmtError(w, http.StatusNotFound, "The role does not exist: "+truncate(rid, 60), "inexistent_role")
				return
			}
			names = append(names, role.Name)
		}
		_, err := s.store.update(id, func(ch *userChange, u userRecord) {
			cur := u.Roles
			if add {
				for _, n := range names {
					if !slices.Contains(cur, n) {
						cur = append(cur, n)
					}
				}
			} else {
				cur = slices.DeleteFunc(cur, func(n string) bool { return slices.Contains(names, n) })
			}
			ch.Roles, ch.RolesSet = s.inRoleOrder(cur), true
		})
		if err != nil {
			s.storeFailed(w, r, err)
			return
		}
		note(r, "user_id", id, "roles_changed", strings.Join(names, ","))
		w.WriteHeader(http.StatusNoContent)
	}
}

// --- signing keys -------------------------------------------------------------------

func keyJSON(k signingKey) map[string]any {
	sum := sha1.Sum(k.cert.Raw)
	hexSum := strings.ToUpper(hex.EncodeToString(sum[:]))
	var fp bytes.Buffer
	for i := 0; i < len(hexSum); i += 2 {
		if i > 0 {
			fp.WriteByte(':')
		}
		fp.WriteString(hexSum[i : i+2])
	}
	out := map[string]any{
		"kid": k.KID, "cert": k.Cert, "fingerprint": fp.String(), "thumbprint": strings.ToLower(hexSum),
		"current": k.State == "current", "next": k.State == "next", "previous": k.State == "previous",
		"revoked": k.State == "revoked",
	}
	if k.CurrentSince != nil {
		out["current_since"] = k.CurrentSince.Format(time.RFC3339)
	}
	if k.CurrentUntil != nil {
		out["current_until"] = k.CurrentUntil.Format(time.RFC3339)
	}
	if k.RevokedAt != nil {
		out["revoked_at"] = k.RevokedAt.Format(time.RFC3339)
	}
	return out
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	out := []map[string]any{}
	for _, k := range s.keys.list() {
		out = append(out, keyJSON(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	for _, k := range s.keys.list() {
		if k.KID == r.PathValue("kid") {
			writeJSON(w, http.StatusOK, keyJSON(k))
			return
		}
	}
	writeMgmtError(w, http.StatusNotFound, "Signing key not found", "inexistent_signing_key")
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	k, err := s.keys.rotate()
	if err != nil {
		note(r, "store_error", err.Error())
		writeMgmtError(w, http.StatusServiceUnavailable, "The key could not be rotated; try again", "temporarily_unavailable")
		return
	}
	note(r, "current_kid", k.KID)
	writeJSON(w, http.StatusCreated, map[string]string{"cert": k.Cert, "kid": k.KID})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, _ *verifiedClaims) {
	kid := r.PathValue("kid")
	var found *signingKey
	for _, k := range s.keys.list() {
		if k.KID == kid {
			found = &k
		}
	}
	if found == nil {
		writeMgmtError(w, http.StatusNotFound, "Signing key not found", "inexistent_signing_key")
		return
	}
	k, err := s.keys.revokePrevious(kid)
	switch {
	case errors.Is(err, ErrNoPreviousKey):
		writeMgmtError(w, http.StatusBadRequest, "Only the previous signing key can be revoked", "invalid_signing_key_state")
		return
	case err != nil:
		note(r, "store_error", err.Error())
		writeMgmtError(w, http.StatusServiceUnavailable, "The key could not be revoked; try again", "temporarily_unavailable")
		return
	}
	note(r, "revoked_kid", k.KID)
	writeJSON(w, http.StatusOK, map[string]string{"cert": k.Cert, "kid": k.KID})
}
