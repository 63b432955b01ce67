package tenant

// The authentication API's request parameters and answers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError writes Auth0's authentication API error body.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized && code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="devtenant"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed; use "+strings.Join(allow, " or "))
}

type params map[string]string

func (p params) get(k string) string { return p[k] }

type oauthErr struct {
	status     int
	code, desc string
}

func (e *oauthErr) write(w http.ResponseWriter) { oauthError(w, e.status, e.code, e.desc) }

func badRequest(desc string) *oauthErr {
	return &oauthErr{status: http.StatusBadRequest, code: "invalid_request", desc: desc}
}

// oauthPost serves an authentication API endpoint that takes a POST with
// parameters, and answers (and logs) its error the same way for every one.
func oauthPost(fn func(w http.ResponseWriter, r *http.Request, p params) *oauthErr) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		p, err := readParams(r)
		if err == nil {
			err = fn(w, r, p)
		}
		if err != nil {
			note(r, "error", err.code)
			err.write(w)
		}
	}
}

// readParams reads a form or JSON body, as Auth0 accepts both.
func readParams(r *http.Request) (params, *oauthErr) {
	ct := r.Header.Get("Content-Type")
	mediaType, _, _ := strings.Cut(ct, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	out := params{}
	switch mediaType {
	case "application/json":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, tooLarge(err)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, badRequest("Request body is not a JSON object")
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			case nil:
			default:
				return nil, badRequest(fmt.Sprintf("Parameter %s must be a string", k))
			}
		}
	case "application/x-www-form-urlencoded", "":
		if err := r.ParseForm(); err != nil {
			return nil, tooLarge(err)
		}
		for k, vs := range r.PostForm {
			if len(vs) > 1 {
				return nil, badRequest(fmt.Sprintf("Parameter %s must not be repeated", k))
			}
			out[k] = vs[0]
		}
	default:
		return nil, &oauthErr{status: http.StatusUnsupportedMediaType, code: "invalid_request",
			desc: "Content-Type must be application/x-www-form-urlencoded or application/json"}
	}
	return out, nil
}

func tooLarge(err error) *oauthErr {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &oauthErr{status: http.StatusRequestEntityTooLarge, code: "invalid_request", desc: "Request body too large"}
	}
	return badRequest("Malformed request body")
}
