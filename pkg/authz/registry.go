package authz

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"

	"github.com/labstack/echo/v4"
)

// Registry maps each route (method + Echo path pattern) to its Policy. The
// middleware denies any matched route missing from it; Check, run at start-up
// and in tests, names every such route before a request ever does.
type Registry struct {
	mu       sync.RWMutex
	policies map[routeKey]Policy
	others   []namedPolicy // policies outside the routes (Declare)
}

type namedPolicy struct {
	what   string
	policy Policy
}

type routeKey struct{ method, path string }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{policies: make(map[routeKey]Policy)} }

// Set declares the policy of a route; path is Echo's pattern ("/v1/orders/:id").
func (r *Registry) Set(method, path string, p Policy) {
	r.mu.Lock()
	r.policies[routeKey{method, path}] = p
	r.mu.Unlock()
}

// Declare names a policy used outside the routes — a NATS endpoint's, a
// consumer's on-behalf policy — so that CheckPermissions holds it against
// the tenant too. what says where it is used ("NATS endpoint <subject>").
func (r *Registry) Declare(what string, p Policy) {
	r.mu.Lock()
	r.others = append(r.others, namedPolicy{what: what, policy: p})
	r.mu.Unlock()
}

// Policy returns the declared policy of a route.
func (r *Registry) Policy(method, path string) (Policy, bool) {
	r.mu.RLock()
	p, ok := r.policies[routeKey{method, path}]
	r.mu.RUnlock()
	return p, ok
}

// Check fails naming every route in routes (usually e.Routes()) that has no
// declared policy, and every route or declared policy (Declare) that is not
// public yet does not say who may call it (Policy.Users, Policy.Clients).
// Echo's RouteNotFound entries are not routes.
func (r *Registry) Check(routes []*echo.Route) error {
	var missing, silent []string
	for _, rt := range routes {
		if rt.Method == echo.RouteNotFound {
			continue
		}
		p, ok := r.Policy(rt.Method, rt.Path)
		switch {
		case !ok || !p.Declared():
			missing = append(missing, rt.Method+" "+rt.Path)
		case !p.SaysWho():
			silent = append(silent, "route "+rt.Method+" "+rt.Path)
		}
	}
	sort.Strings(missing)
	sort.Strings(silent)
	r.mu.RLock()
	for _, np := range r.others {
		if !np.policy.SaysWho() {
			silent = append(silent, np.what)
		}
	}
	r.mu.RUnlock()
	errs := make([]error, 0, len(missing)+len(silent))
	for _, m := range missing {
		errs = append(errs, fmt.Errorf("authz: route %s has no policy", m))
	}
	for _, what := range silent {
		errs = append(errs, fmt.Errorf("authz: %s: %w", what, ErrPolicyWithoutWho))
	}
	return errors.Join(errs...)
}

// ErrPolicyWithoutWho is what Check (and natsauth's endpoint and consumer
// constructors) report for a non-public policy that admits neither users
// nor any named client.
var ErrPolicyWithoutWho = errors.New("the policy does not say who may call: add Users() and/or Clients(ids...)")

// CheckPermissions fails for every permission or scope a route's or a
// declared policy uses that is not in known (the API's permissions, see
// LoadTenantPermissions).
func (r *Registry) CheckPermissions(known []string) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var errs []error
	keys := make([]routeKey, 0, len(r.policies))
	for k := range r.policies {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b routeKey) int {
		if a.path != b.path {
			if a.path < b.path {
				return -1
			}
			return 1
		}
		if a.method < b.method {
			return -1
		}
		if a.method > b.method {
			return 1
		}
		return 0
	})
	uses := make([]namedPolicy, 0, len(keys)+len(r.others))
	for _, k := range keys {
		uses = append(uses, namedPolicy{what: "route " + k.method + " " + k.path, policy: r.policies[k]})
	}
	for _, np := range append(uses, r.others...) {
		for _, name := range np.policy.Names() {
			if !slices.Contains(known, name) {
				errs = append(errs, fmt.Errorf("authz: %s uses permission %q that the tenant does not define", np.what, name))
			}
		}
	}
	return errors.Join(errs...)
}

// Router is what both *echo.Echo and *echo.Group provide.
type Router interface {
	Add(method, path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route
}

// Handle registers an Echo route and its policy together. The policy is stored
// under the route's full path, so it works on groups too.
func Handle(rt Router, reg *Registry, method, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	route := rt.Add(method, path, h, m...)
	reg.Set(route.Method, route.Path, p)
	return route
}

// GET registers a GET route with its policy:
//
//	authz.GET(e, reg, "/v1/me", getMe, authz.RequireAll("read:profile").Users())
func GET(rt Router, reg *Registry, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	return Handle(rt, reg, http.MethodGet, path, h, p, m...)
}

// POST registers a POST route with its policy.
func POST(rt Router, reg *Registry, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	return Handle(rt, reg, http.MethodPost, path, h, p, m...)
}

// PUT registers a PUT route with its policy.
func PUT(rt Router, reg *Registry, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	return Handle(rt, reg, http.MethodPut, path, h, p, m...)
}

// PATCH registers a PATCH route with its policy.
func PATCH(rt Router, reg *Registry, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	return Handle(rt, reg, http.MethodPatch, path, h, p, m...)
}

// DELETE registers a DELETE route with its policy.
func DELETE(rt Router, reg *Registry, path string, h echo.HandlerFunc, p Policy, m ...echo.MiddlewareFunc) *echo.Route {
	return Handle(rt, reg, http.MethodDelete, path, h, p, m...)
}
