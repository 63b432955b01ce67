// Package ports serves the users service's use cases over HTTP (Echo) and
// NATS micro: edge types, validation at the edge, route policies.
package ports

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/users/internal/app"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// HTTP serves contract §4's users endpoints.
type HTTP struct{ svc *app.Service }

// Policies of the routes (contract §4). Every route is for people: /v1/me
// is about the caller, and blocking, unblocking and role changes are an
// admin's decisions. No service token is admitted, so a service's M2M
// token (users-service holds block:users to sign its own events) taken
// from anywhere cannot block or promote anyone here (docs/contract.md §7).
var (
	PolicyReadProfile   = authz.RequireAll("read:profile").Users()
	PolicyUpdateProfile = authz.RequireAll("update:profile").Users()
	PolicyReadUsers     = authz.RequireAll("read:users").Users()
	PolicyBlockUsers    = authz.RequireAll("block:users").Users()
	PolicyAssignRoles   = authz.RequireAll("assign:roles").Users()
)

// RegisterHTTP declares every route with its policy.
func RegisterHTTP(r platform.Router, svc *app.Service) {
	h := &HTTP{svc: svc}
	r.Route(http.MethodGet, "/v1/me", PolicyReadProfile, h.getMe)
	r.Route(http.MethodPatch, "/v1/me", PolicyUpdateProfile, h.patchMe)
	r.Route(http.MethodGet, "/v1/users", PolicyReadUsers, h.listUsers)
	r.Route(http.MethodGet, "/v1/users/:user_id", PolicyReadUsers, h.getUser)
	r.Route(http.MethodPost, "/v1/users/:user_id/block", PolicyBlockUsers, h.block)
	r.Route(http.MethodPost, "/v1/users/:user_id/unblock", PolicyBlockUsers, h.unblock)
	r.Route(http.MethodPut, "/v1/users/:user_id/roles", PolicyAssignRoles, h.putRoles)
}

// ErrorMappings are the domain sentinels' HTTP answers, for platform.Options.
func ErrorMappings() []platform.ErrorMapping {
	return []platform.ErrorMapping{
		{Target: domain.ErrNotFound, Status: http.StatusNotFound, Code: platform.CodeNotFound, Message: "user not found"},
		{Target: domain.ErrConflict, Status: http.StatusConflict, Code: "conflict", Message: "the user changed concurrently; retry"},
		{Target: domain.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: platform.CodeUnavailable, Message: "a dependency is unavailable; retry later"},
	}
}

// retryAfterSeconds is the Retry-After of a 503: about how long the service
// waits before asking an unreachable tenant again.
const retryAfterSeconds = "5"

// edge turns a domain validation error into platform's 422 with its fields
// and adds Retry-After to a 503; everything else goes to the error handler's
// mappings as it is.
func edge(c echo.Context, err error) error {
	if errors.Is(err, domain.ErrUnavailable) {
		c.Response().Header().Set(echo.HeaderRetryAfter, retryAfterSeconds)
	}
	var ve *domain.ValidationError
	if errors.As(err, &ve) {
		return platform.Validation(ve.Fields).Err() // Err copies the fields
	}
	return err
}

type addressJSON struct {
	Line1      string `json:"line1"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
}

func toAddressJSON(a *domain.Address) *addressJSON {
	if a == nil {
		return nil
	}
	return &addressJSON{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
}

type userJSON struct {
	UserID          string       `json:"user_id"`
	Email           string       `json:"email"`
	Name            string       `json:"name"`
	Roles           []string     `json:"roles"`
	Blocked         bool         `json:"blocked"`
	ShippingAddress *addressJSON `json:"shipping_address"`
}

func toUserJSON(u domain.User) userJSON {
	roles := u.Roles
	if roles == nil {
		roles = []string{}
	}
	return userJSON{UserID: u.ID, Email: u.Email, Name: u.Name, Roles: roles, Blocked: u.Blocked, ShippingAddress: toAddressJSON(u.ShippingAddress)}
}

// listedUserJSON has no roles: the tenant's user list does not carry them
// and a roles call per listed user would spend the Management API quota.
type listedUserJSON struct {
	UserID          string       `json:"user_id"`
	Email           string       `json:"email"`
	Name            string       `json:"name"`
	Blocked         bool         `json:"blocked"`
	ShippingAddress *addressJSON `json:"shipping_address"`
}

type pageJSON struct {
	Users   []listedUserJSON `json:"users"`
	Page    int              `json:"page"`
	PerPage int              `json:"per_page"`
	Total   int              `json:"total"`
}

// callerID is the sub of the verified token (the middleware guarantees one).
func callerID(c echo.Context) (string, error) {
	cl, ok := authz.ClaimsFromEcho(c)
	if !ok || cl.Subject == "" {
		return "", authz.ErrMissingToken
	}
	return cl.Subject, nil
}

// userIDParam returns the path's user id unescaped: clients send
// "auth0%7C..." as Auth0's own API expects, or a raw "|".
func userIDParam(c echo.Context) (string, error) {
	raw := c.Param("user_id")
	id, err := url.PathUnescape(raw)
	if err != nil {
		return "", platform.ValidationError("user_id", "is not a valid user id")
	}
	return id, nil
}

func (h *HTTP) getMe(c echo.Context) error   { return h.getOne(c, callerID, h.svc.Me) }
func (h *HTTP) getUser(c echo.Context) error { return h.getOne(c, userIDParam, h.svc.User) }

// getOne answers the user get returns for the id idOf reads from the
// request: a read, or a change (see withBody) answered with the changed user.
func (h *HTTP) getOne(c echo.Context, idOf func(echo.Context) (string, error), get func(context.Context, string) (domain.User, error)) error {
	id, err := idOf(c)
	if err != nil {
		return err
	}
	u, err := get(c.Request().Context(), id)
	if err != nil {
		return edge(c, err)
	}
	return c.JSON(http.StatusOK, toUserJSON(u))
}

type patchMeRequest struct {
	Name            *string      `json:"name"`
	ShippingAddress *addressJSON `json:"shipping_address"`
}

func (r patchMeRequest) toDomain() domain.ProfileUpdate {
	u := domain.ProfileUpdate{Name: r.Name}
	if a := r.ShippingAddress; a != nil {
		u.ShippingAddress = &domain.Address{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	return u
}

func (h *HTTP) patchMe(c echo.Context) error {
	return h.getOne(c, callerID, withBody(c, func(ctx context.Context, id string, req patchMeRequest) (domain.User, error) {
		return h.svc.UpdateProfile(ctx, id, req.toDomain())
	}))
}

// withBody is getOne's get for a change that takes the request body: it
// binds the body (after the id is read) and passes it on.
func withBody[R any](c echo.Context, change func(context.Context, string, R) (domain.User, error)) func(context.Context, string) (domain.User, error) {
	return func(ctx context.Context, id string) (domain.User, error) {
		var req R
		if err := platform.BindJSON(c, &req); err != nil {
			return domain.User{}, err
		}
		return change(ctx, id, req)
	}
}

func (h *HTTP) listUsers(c echo.Context) error {
	v := platform.Validation{}
	page := intParam(c, "page", 0, v)
	perPage := intParam(c, "per_page", domain.DefaultPerPage, v)
	v.Check(page >= 0 && page <= 1000, "page", "must be between 0 and 1000")
	v.Check(perPage >= 1 && perPage <= domain.MaxPerPage, "per_page", "must be between 1 and 100")
	if err := v.Err(); err != nil {
		return err
	}
	p, err := h.svc.ListUsers(c.Request().Context(), page, perPage)
	if err != nil {
		return edge(c, err)
	}
	out := pageJSON{Users: make([]listedUserJSON, 0, len(p.Users)), Page: p.Page, PerPage: p.PerPage, Total: p.Total}
	for _, u := range p.Users {
		out.Users = append(out.Users, listedUserJSON{UserID: u.ID, Email: u.Email, Name: u.Name, Blocked: u.Blocked, ShippingAddress: toAddressJSON(u.ShippingAddress)})
	}
	return c.JSON(http.StatusOK, out)
}

// intParam reads a query integer, recording a field error when malformed.
func intParam(c echo.Context, name string, def int, v platform.Validation) int {
	s := c.QueryParam(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		v.Add(name, "must be an integer")
		return def
	}
	return n
}

func (h *HTTP) block(c echo.Context) error   { return h.setBlocked(c, true) }
func (h *HTTP) unblock(c echo.Context) error { return h.setBlocked(c, false) }

func (h *HTTP) setBlocked(c echo.Context, blocked bool) error {
	return h.getOne(c, userIDParam, func(ctx context.Context, id string) (domain.User, error) {
		return h.svc.SetBlocked(ctx, id, blocked)
	})
}

type rolesRequest struct {
	Roles []string `json:"roles"`
}

func (h *HTTP) putRoles(c echo.Context) error {
	return h.getOne(c, userIDParam, withBody(c, func(ctx context.Context, id string, req rolesRequest) (domain.User, error) {
		return h.svc.ReplaceRoles(ctx, id, req.Roles)
	}))
}
