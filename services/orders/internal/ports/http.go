// Package ports adapts HTTP (Echo) and JetStream events to the orders use
// cases: edge types, route policies, and the mapping of domain errors.
package ports

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Permissions of the orders API (contract §2).
const (
	PermCreate  = "create:orders"
	PermRead    = "read:orders"
	PermCancel  = "cancel:orders"
	PermReadAll = "read:all-orders"
)

// HeaderIdempotencyKey is the optional header of POST /v1/orders.
const HeaderIdempotencyKey = "Idempotency-Key"

// HeaderIdempotentReplayed marks an answer that repeats an earlier order.
const HeaderIdempotentReplayed = "Idempotent-Replayed"

// readAll is what reading other users' orders requires.
var readAll = authz.RequireAll(PermReadAll).Users()

// HTTP serves the orders API.
type HTTP struct {
	svc *app.Service
}

// RegisterHTTP declares every route of contract §4 with its policy. Orders
// belong to users, so only user tokens may create, list or cancel them.
func RegisterHTTP(r platform.Router, svc *app.Service) {
	h := &HTTP{svc: svc}
	r.Route(http.MethodGet, "/v1/catalog", authz.Public(), h.catalog)
	r.Route(http.MethodPost, "/v1/orders", authz.RequireAll(PermCreate).Users(), h.create)
	r.Route(http.MethodGet, "/v1/orders", authz.RequireAll(PermRead).Users(), h.list)
	r.Route(http.MethodGet, "/v1/orders/:id", authz.RequireAll(PermRead).Users(), h.get)
	r.Route(http.MethodPost, "/v1/orders/:id/cancel", authz.RequireAll(PermCancel).Users(), h.cancel)
}

// ErrorMappings maps the domain's sentinels to HTTP answers (contract §5).
// Order matters: the first match wins.
func ErrorMappings() []platform.ErrorMapping {
	return []platform.ErrorMapping{
		{Target: domain.ErrNotFound, Status: http.StatusNotFound, Code: "not_found", Message: "no such order"},
		{Target: domain.ErrIdempotencyMismatch, Status: http.StatusConflict, Code: "idempotency_key_reused",
			Message: "this Idempotency-Key was used with a different request"},
		{Target: domain.ErrConflict, Status: http.StatusConflict, Code: "conflict", Message: "the order's state does not allow this"},
		{Target: domain.ErrForbidden, Status: http.StatusForbidden, Code: "forbidden", Message: "access denied"},
		{Target: domain.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: "unavailable",
			Message: "a dependency is temporarily unavailable; retry later"},
	}
}

// Edge types.

type productJSON struct {
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	Currency       string `json:"currency"`
}

type lineRequestJSON struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type createRequest struct {
	Items []lineRequestJSON `json:"items"`
}

type lineJSON struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	LineTotalCents int64  `json:"line_total_cents"`
}

type addressJSON struct {
	Line1      string `json:"line1"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
}

type orderJSON struct {
	ID              string       `json:"id"`
	UserID          string       `json:"user_id"`
	OrgID           string       `json:"org_id,omitempty"`
	Status          string       `json:"status"`
	Items           []lineJSON   `json:"items"`
	TotalCents      int64        `json:"total_cents"`
	Currency        string       `json:"currency"`
	ShippingAddress *addressJSON `json:"shipping_address"`
	CreatedAt       time.Time    `json:"created_at"`
	UpdatedAt       time.Time    `json:"updated_at"`
}

func toOrderJSON(o domain.Order) orderJSON {
	out := orderJSON{
		ID: o.ID, UserID: o.UserID, OrgID: o.OrgID, Status: string(o.Status), TotalCents: o.TotalCents,
		Currency: o.Currency, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
		Items: make([]lineJSON, len(o.Items)),
	}
	for i, l := range o.Items {
		out.Items[i] = lineJSON{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.LineTotalCents}
	}
	if a := o.ShippingAddress; a != nil {
		out.ShippingAddress = &addressJSON{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}
	}
	return out
}

// caller derives the use cases' caller from the verified claims; the request's
// context already carries the token, request id and trace (pkg/platform).
func caller(c echo.Context) (context.Context, app.Caller, error) {
	cl, ok := authz.ClaimsFromEcho(c)
	if !ok {
		return nil, app.Caller{}, authz.ErrMissingToken
	}
	return c.Request().Context(), app.Caller{Subject: cl.Subject, OrgID: cl.OrgID, ReadAll: readAll.Allows(cl)}, nil
}

// mapErr turns domain validation failures into 422s with field messages and
// leaves the rest to the platform's error mappings.
func mapErr(err error) error {
	var verr *domain.ValidationError
	if errors.As(err, &verr) {
		return platform.Validation(verr.Fields).Err() // Err copies the fields
	}
	return err
}

func (h *HTTP) catalog(c echo.Context) error {
	ps := h.svc.Catalog()
	out := make([]productJSON, len(ps))
	for i, p := range ps {
		out[i] = productJSON{SKU: p.SKU, Name: p.Name, UnitPriceCents: p.UnitPriceCents, Currency: p.Currency}
	}
	return c.JSON(http.StatusOK, out)
}

func (h *HTTP) create(c echo.Context) error {
	ctx, who, err := caller(c)
	if err != nil {
		return err
	}
	var req createRequest
	if err := platform.BindJSON(c, &req); err != nil {
		return err
	}
	if req.Items == nil {
		return platform.ValidationError("items", "is required")
	}
	lines := make([]domain.LineRequest, len(req.Items))
	for i, l := range req.Items {
		lines[i] = domain.LineRequest{SKU: l.SKU, Quantity: l.Quantity}
	}
	o, replayed, err := h.svc.PlaceOrder(ctx, who, c.Request().Header.Get(HeaderIdempotencyKey), lines)
	if err != nil {
		return mapErr(err)
	}
	natsauth.RecordID(ctx, events.AttrOrderID, o.ID)
	if replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/orders/"+o.ID)
	return c.JSON(http.StatusCreated, toOrderJSON(o))
}

func (h *HTTP) list(c echo.Context) error {
	ctx, who, err := caller(c)
	if err != nil {
		return err
	}
	orders, err := h.svc.ListOrders(ctx, who, c.QueryParam("user_id"))
	if errors.Is(err, domain.ErrForbidden) {
		// Answered like a route policy failure (contract §5), naming what is missing.
		return &authz.Error{Code: authz.CodeInsufficientScope, Reason: "missing_permission",
			Description: "requires " + PermReadAll, Needed: []string{PermReadAll}}
	}
	if err != nil {
		return err
	}
	out := make([]orderJSON, len(orders))
	for i, o := range orders {
		out[i] = toOrderJSON(o)
	}
	return c.JSON(http.StatusOK, out)
}

func (h *HTTP) get(c echo.Context) error    { return byID(c, h.svc.GetOrder) }
func (h *HTTP) cancel(c echo.Context) error { return byID(c, h.svc.CancelOrder) }

// byID answers a use case on the order named in the path with that order.
func byID(c echo.Context, use func(context.Context, app.Caller, string) (domain.Order, error)) error {
	ctx, who, err := caller(c)
	if err != nil {
		return err
	}
	o, err := use(ctx, who, c.Param("id"))
	if err != nil {
		return mapErr(err)
	}
	return c.JSON(http.StatusOK, toOrderJSON(o))
}
