package tenant

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const codeLifetime = 5 * time.Minute

// authorizeFields travel from the /authorize query into hidden form fields and back.
var authorizeFields = []string{"response_type", "client_id", "redirect_uri", "scope", "audience", "resource", "state", "nonce", "code_challenge", "code_challenge_method", "response_mode", "organization", "dpop_jkt"}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in — devtenant</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}label,input,button{display:block;width:100%;margin:.4rem 0}input{padding:.4rem}.warn{background:#fff3cd;padding:.5rem}.err{color:#b00020}</style>
</head><body>
<p class="warn">devtenant — a local development tenant. Never enter a real password here.</p>
<h1>Log in to {{.Client}}</h1>
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="authorize">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label for="username">Email</label><input id="username" name="username" type="email" autocomplete="username" value="{{.Username}}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Continue</button>
</form></body></html>
`))

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Error — devtenant</title></head><body>
<h1>{{.Code}}</h1><p>{{.Description}}</p></body></html>
`))

type hiddenField struct{ Name, Value string }

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	var q url.Values
	switch r.Method {
	case http.MethodGet:
		q = r.URL.Query()
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			s.authorizePageError(w, http.StatusBadRequest, "invalid_request", tooLarge(err).desc)
			return
		}
		q = r.PostForm
	default:
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
		return
	}
	// Until client and redirect_uri are known good, errors are shown here,
	// never sent to an unchecked redirect target.
	c := s.model.Clients[q.Get("client_id")]
	if c == nil {
		s.authorizePageError(w, http.StatusBadRequest, "invalid_request", "Unknown client.")
		return
	}
	note(r, "client_id", c.ID)
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" || !slices.Contains(c.Callbacks, redirectURI) {
		s.authorizePageError(w, http.StatusBadRequest, "invalid_request",
			"Callback URL mismatch. The redirect_uri is not in the client's allowed callbacks (clients[].callbacks in the tenant file).")
		return
	}
	fail := func(code, desc string) {
		redirectWith(w, r, redirectURI, url.Values{"error": {code}, "error_description": {desc}}, q.Get("state"))
	}
	if !c.allows(GrantAuthorizationCode) {
		fail("unauthorized_client", "Grant type 'authorization_code' not allowed for the client.")
		return
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "Unsupported response type: "+truncate(q.Get("response_type"), 50))
		return
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		fail("invalid_request", "Unsupported response_mode; use query")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	if challenge == "" && c.Public {
		fail("invalid_request", "Parameter code_challenge is required for public clients (PKCE)")
		return
	}
	if challenge != "" {
		if method == "" {
			method = "plain"
		}
		if method != "S256" && method != "plain" {
			fail("invalid_request", "Unsupported code_challenge_method; use S256")
			return
		}
		if len(challenge) < 43 || len(challenge) > 128 {
			fail("invalid_request", "Invalid code_challenge")
			return
		}
	}
	jkt := q.Get("dpop_jkt")
	if jkt != "" && !validJKT(jkt) {
		fail("invalid_request", "Invalid dpop_jkt: want the base64url SHA-256 thumbprint of the DPoP key")
		return
	}
	api, aerr := s.userAudience(s.audienceParam(q.Get))
	if aerr != nil {
		fail(aerr.code, aerr.desc)
		return
	}
	org, oerr := s.loginClientOrg(c, q.Get("organization"))
	if oerr != nil {
		fail(oerr.code, oerr.desc)
		return
	}
	if q.Get("prompt") == "none" {
		fail("login_required", "Login required")
		return
	}

	hidden := make([]hiddenField, 0, len(authorizeFields))
	for _, f := range authorizeFields {
		if v := q.Get(f); v != "" {
			hidden = append(hidden, hiddenField{f, v})
		}
	}
	showForm := func(status int, msg string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.WriteHeader(status)
		_ = loginPage.Execute(w, map[string]any{"Client": c.ID, "Error": msg, "Hidden": hidden, "Username": q.Get("username")})
	}
	if r.Method == http.MethodGet {
		showForm(http.StatusOK, "")
		return
	}
	u, ok := s.store.userByEmail(strings.ToLower(strings.TrimSpace(q.Get("username"))))
	if !ok || !checkPassword(u, q.Get("password")) {
		note(r, "error", "invalid_user_password")
		showForm(http.StatusUnauthorized, "Wrong email or password.")
		return
	}
	note(r, "sub", u.ID)
	if u.Blocked {
		fail("unauthorized", "user is blocked")
		return
	}
	if err := member(org, u.ID); err != nil {
		fail(err.code, err.desc)
		return
	}
	s.store.recordLogin(u.ID)
	orgID := ""
	if org != nil {
		orgID = org.ID
	}
	aud := ""
	if api != nil {
		aud = api.Identifier
	}
	code := s.store.newCode(&authCode{
		clientID: c.ID, redirectURI: redirectURI, userID: u.ID, audience: aud, scope: q.Get("scope"),
		nonce: q.Get("nonce"), orgID: orgID, challenge: challenge, challengeMethod: method, jkt: jkt, expires: s.now().Add(codeLifetime),
	})
	redirectWith(w, r, redirectURI, url.Values{"code": {code}}, q.Get("state"))
}

func redirectWith(w http.ResponseWriter, r *http.Request, target string, v url.Values, state string) {
	if state != "" {
		v.Set("state", state)
	}
	u, _ := url.Parse(target) // checked against the client's callbacks, which were validated at start
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Server) authorizePageError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, map[string]string{"Code": code, "Description": desc})
}
