package tenant

// Management API: users.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/authmesh/authmesh/pkg/authz"
)

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

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
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

func (s *Server) usersByEmail(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
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

// userChangeRequest reads the id of an existing user from the path and the
// JSON object body of a change to it.
func (s *Server) userChangeRequest(w http.ResponseWriter, r *http.Request) (string, map[string]json.RawMessage, bool) {
	if _, ok := s.userFromPath(w, r); !ok {
		return "", nil, false
	}
	body, ok := readMgmtBody(w, r)
	return r.PathValue("id"), body, ok
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	if u, ok := s.userFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, s.userJSON(u))
	}
}

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request, c *authz.Claims) {
	id, body, ok := s.userChangeRequest(w, r)
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
	for _, k := range slices.Sorted(maps.Keys(body)) {
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
