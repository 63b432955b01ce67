package tenant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

const stateFileName = "users.json"

// userRecord is a user as the tenant sees it now: the dev file plus changes
// made through the Management API.
type userRecord struct {
	User
	CreatedAt    time.Time
	UpdatedAt    time.Time
	LastLogin    *time.Time
	LoginsCount  int
	AppMetadata  map[string]any
	UserMetadata map[string]any
}

// userChange is what is persisted per user: only what the Management API changed.
type userChange struct {
	Blocked      *bool          `json:"blocked,omitempty"`
	Roles        []string       `json:"roles,omitempty"`
	RolesSet     bool           `json:"roles_set,omitempty"`
	Name         *string        `json:"name,omitempty"`
	Nickname     *string        `json:"nickname,omitempty"`
	GivenName    *string        `json:"given_name,omitempty"`
	FamilyName   *string        `json:"family_name,omitempty"`
	AppMetadata  map[string]any `json:"app_metadata,omitempty"`
	UserMetadata map[string]any `json:"user_metadata,omitempty"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

type authCode struct {
	clientID, redirectURI, userID, audience, scope, nonce string
	orgID                                                 string // the organization logged in to
	challenge, challengeMethod                            string
	jkt                                                   string // dpop_jkt: the DPoP key that must redeem it (RFC 9449 §10)
	expires                                               time.Time
	used                                                  bool
	family                                                string // refresh family issued from it, revoked on reuse
}

type refreshRecord struct {
	family, clientID, userID, audience, scope string
	orgID                                     string // the organization the family was issued for
	jkt                                       string // the DPoP key a public client's refresh token is bound to
	used                                      bool
	expires                                   time.Time
}

// store is the tenant's mutable state. One mutex: the state is small and
// every operation on it is short (no I/O except the persisted user changes).
type store struct {
	mu       sync.Mutex
	path     string
	now      func() time.Time
	users    map[string]*userRecord // by user_id
	order    []string               // user ids in dev-file order
	byEmail  map[string]string
	changes  map[string]*userChange
	codes    map[string]*authCode      // by sha256(code)
	refresh  map[string]*refreshRecord // by sha256(token)
	revoked  map[string]bool           // refresh families
	roleName map[string]bool
}

func openStore(dataDir string, m *Model, now func() time.Time, warn func(string, ...any)) (*store, error) {
	st := &store{
		path: filepath.Join(dataDir, stateFileName), now: now,
		users: map[string]*userRecord{}, byEmail: map[string]string{}, changes: map[string]*userChange{},
		codes: map[string]*authCode{}, refresh: map[string]*refreshRecord{}, revoked: map[string]bool{},
		roleName: map[string]bool{},
	}
	for name := range m.Roles {
		st.roleName[name] = true
	}
	// Creation time is stable per user so list output does not change between restarts.
	epoch := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, u := range m.Users {
		st.users[u.ID] = &userRecord{User: *u, CreatedAt: epoch, UpdatedAt: epoch}
		st.users[u.ID].Roles = slices.Clone(u.Roles)
		st.order = append(st.order, u.ID)
		st.byEmail[u.Email] = u.ID
	}
	raw, err := os.ReadFile(st.path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("user changes: %w", err)
	}
	if err := json.Unmarshal(raw, &st.changes); err != nil {
		return nil, fmt.Errorf("user changes %s: %v; fix: delete the file to drop changes made through the Management API", st.path, err)
	}
	for id, ch := range st.changes {
		u := st.users[id]
		if u == nil {
			warn("devtenant: dropping persisted changes of a user no longer in the dev users file", "user_id", id)
			delete(st.changes, id)
			continue
		}
		if ch.RolesSet {
			ch.Roles = slices.DeleteFunc(ch.Roles, func(r string) bool {
				if !st.roleName[r] {
					warn("devtenant: dropping a persisted role the tenant no longer has", "user_id", id, "role", r)
					return true
				}
				return false
			})
		}
		st.apply(u, ch)
	}
	return st, nil
}

func (st *store) apply(u *userRecord, ch *userChange) {
	if ch.Blocked != nil {
		u.Blocked = *ch.Blocked
	}
	if ch.RolesSet {
		u.Roles = slices.Clone(ch.Roles)
	}
	for dst, src := range map[*string]*string{&u.Name: ch.Name, &u.Nickname: ch.Nickname, &u.GivenName: ch.GivenName, &u.FamilyName: ch.FamilyName} {
		if src != nil {
			*dst = *src
		}
	}
	u.AppMetadata, u.UserMetadata = ch.AppMetadata, ch.UserMetadata
	if !ch.UpdatedAt.IsZero() {
		u.UpdatedAt = ch.UpdatedAt
	}
}

// persist writes the change set; caller holds mu.
func (st *store) persist() error {
	b, err := json.MarshalIndent(st.changes, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(st.path, b)
}

// snapshot copies a user so callers can read it without the lock.
func (u *userRecord) snapshot() userRecord {
	c := *u
	c.Roles = slices.Clone(u.Roles)
	return c
}

func (st *store) userByEmail(email string) (userRecord, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.user(st.byEmail[email]) // no user has the id ""
}

func (st *store) userByID(id string) (userRecord, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.user(id)
}

// user copies user id; caller holds mu.
func (st *store) user(id string) (userRecord, bool) {
	u, ok := st.users[id]
	if !ok {
		return userRecord{}, false
	}
	return u.snapshot(), true
}

func (st *store) allUsers() []userRecord {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]userRecord, 0, len(st.order))
	for _, id := range st.order {
		out = append(out, st.users[id].snapshot())
	}
	return out
}

// checkPassword compares in constant time over digests so neither length nor content leaks.
func checkPassword(u userRecord, password string) bool {
	a, b := sha256.Sum256([]byte(u.Password)), sha256.Sum256([]byte(password))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (st *store) recordLogin(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if u := st.users[id]; u != nil {
		t := st.now().UTC()
		u.LastLogin = &t
		u.LoginsCount++
	}
}

// update applies a change to a user and persists it before it takes effect.
func (st *store) update(id string, edit func(ch *userChange, cur userRecord)) (userRecord, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	u := st.users[id]
	if u == nil {
		return userRecord{}, errUserNotFound
	}
	prev, had := st.changes[id]
	ch := &userChange{}
	if had {
		cp := *prev
		cp.Roles = slices.Clone(prev.Roles)
		ch = &cp
	}
	edit(ch, u.snapshot())
	ch.UpdatedAt = st.now().UTC()
	st.changes[id] = ch
	if err := st.persist(); err != nil {
		if had {
			st.changes[id] = prev
		} else {
			delete(st.changes, id)
		}
		return userRecord{}, fmt.Errorf("persist user change: %w", err)
	}
	st.apply(u, ch)
	return u.snapshot(), nil
}

var errUserNotFound = errors.New("user not found")

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return string(sum[:])
}

func (st *store) newCode(c *authCode) string {
	code := randomToken(24)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.gc()
	st.codes[digest(code)] = c
	return code
}

// takeCode returns the code's grant once; a second use revokes what the first one issued (RFC 6749 §4.1.2).
func (st *store) takeCode(code string) (*authCode, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c, ok := st.codes[digest(code)]
	if !ok || st.now().After(c.expires) {
		return nil, false
	}
	if c.used {
		if c.family != "" {
			st.revoked[c.family] = true
		}
		return nil, false
	}
	c.used = true
	cp := *c
	return &cp, true
}

func (st *store) bindCodeFamily(code, family string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.codes[digest(code)]; ok {
		c.family = family
	}
}

const refreshLifetime = 30 * 24 * time.Hour

func (st *store) newRefresh(family string, r refreshRecord) string {
	tok := "v1." + randomToken(32)
	if family == "" {
		family = randomToken(12)
	}
	r.family = family
	r.expires = st.now().Add(refreshLifetime)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.refresh[digest(tok)] = &r
	return tok
}

// useRefresh consumes a refresh token. With rotation a token works once; a
// second use means it leaked, so its whole family is revoked.
func (st *store) useRefresh(tok string, rotate bool, clientID string) (refreshRecord, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r, ok := st.refresh[digest(tok)]
	if !ok || r.clientID != clientID || st.revoked[r.family] || st.now().After(r.expires) {
		return refreshRecord{}, false
	}
	if r.used {
		st.revoked[r.family] = true
		return refreshRecord{}, false
	}
	if rotate {
		r.used = true
	}
	return *r, true
}

func (st *store) peekRefresh(tok string) (refreshRecord, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r, ok := st.refresh[digest(tok)]
	if !ok {
		return refreshRecord{}, false
	}
	return *r, true
}

func (st *store) revokeRefresh(tok, clientID string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r, ok := st.refresh[digest(tok)]; ok && r.clientID == clientID {
		st.revoked[r.family] = true
	}
}

// gc drops expired codes; caller holds mu.
func (st *store) gc() {
	now := st.now()
	for k, c := range st.codes {
		if now.After(c.expires.Add(time.Hour)) {
			delete(st.codes, k)
		}
	}
	for k, r := range st.refresh {
		if now.After(r.expires) {
			delete(st.refresh, k)
		}
	}
}
