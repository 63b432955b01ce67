// Package ports is billing's edge: Echo handlers with their route policies
// and the NATS micro endpoint orders calls to void an invoice.
package ports

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// Policies of billing's routes (contract §4). Every route is for people.
// Refund in particular: billing-service's own M2M token holds
// refund:invoices (it seals again an invoice.refunded whose sealed token
// ran out in its outbox), and a token taken from an event must not refund anything
// here (docs/contract.md §7).
var (
	PolicyRead    = authz.RequireAll("read:invoices").Users()
	PolicyReadAll = authz.RequireAll("read:all-invoices").Users()
	PolicyPay     = authz.RequireAll("pay:invoices").Users()
	PolicyRefund  = authz.RequireAll("refund:invoices").Users()
)

// PolicyVoid admits the owner's user token or the orders service's own
// (client ordersClient). User tokens are admitted here (unlike the
// ORDERS_EVENTS consumer's on-behalf policy): the use case lets a user void
// only their own order's invoice.
func PolicyVoid(ordersClient string) authz.Policy {
	return authz.RequireAll("cancel:orders").Users().Clients(ordersClient)
}

// ErrorMappings maps the domain's sentinels to HTTP answers.
func ErrorMappings() []platform.ErrorMapping {
	return []platform.ErrorMapping{
		{Target: domain.ErrNotFound, Status: http.StatusNotFound, Code: "not_found", Message: "invoice not found"},
		{Target: domain.ErrConflict, Status: http.StatusConflict, Code: "conflict", Message: "the invoice's status does not allow this"},
		{Target: domain.ErrInvalid, Status: http.StatusUnprocessableEntity, Code: "validation_failed", Message: "invalid invoice data"},
	}
}

// invoiceJSON is the invoice on the wire.
type invoiceJSON struct {
	ID          string     `json:"id"`
	OrderID     string     `json:"order_id"`
	UserID      string     `json:"user_id"`
	OrgID       string     `json:"org_id,omitempty"`
	Status      string     `json:"status"`
	AmountCents int64      `json:"amount_cents"`
	Currency    string     `json:"currency"`
	CreatedAt   time.Time  `json:"created_at"`
	PaidAt      *time.Time `json:"paid_at"`
}

func toJSON(inv domain.Invoice) invoiceJSON {
	out := invoiceJSON{
		ID: inv.ID, OrderID: inv.OrderID, UserID: inv.UserID, OrgID: inv.OrgID, Status: string(inv.Status),
		AmountCents: inv.AmountCents, Currency: inv.Currency, CreatedAt: inv.CreatedAt,
	}
	if !inv.PaidAt.IsZero() {
		t := inv.PaidAt
		out.PaidAt = &t
	}
	return out
}

// HTTP serves billing's API.
type HTTP struct {
	svc *app.Service
}

// RegisterHTTP adds billing's routes with their policies.
func RegisterHTTP(r platform.Router, svc *app.Service) {
	h := &HTTP{svc: svc}
	r.Route(http.MethodGet, "/v1/invoices", PolicyRead, h.list)
	r.Route(http.MethodGet, "/v1/invoices/:id", PolicyRead, h.get)
	r.Route(http.MethodPost, "/v1/invoices/:id/pay", PolicyPay, h.pay)
	r.Route(http.MethodPost, "/v1/invoices/:id/refund", PolicyRefund, h.refund)
}

// caller turns verified claims into the app's view of the caller.
func caller(cl *authz.Claims) app.Caller {
	return app.Caller{
		Subject:    cl.Subject,
		OrgID:      cl.OrgID,
		Service:    cl.IsM2M(),
		CanReadAll: PolicyReadAll.Allows(cl),
	}
}

func claimsOf(c echo.Context) (*authz.Claims, error) {
	cl, ok := authz.ClaimsFromEcho(c)
	if !ok {
		return nil, authz.ErrMissingToken // the middleware runs first; never trust its absence
	}
	return cl, nil
}

func (h *HTTP) list(c echo.Context) error {
	cl, err := claimsOf(c)
	if err != nil {
		return err
	}
	f := app.Filter{UserID: c.QueryParam("user_id"), OrderID: c.QueryParam("order_id")}
	v := platform.Validation{}
	v.Check(f.OrderID == "" || domain.ValidOrderID(f.OrderID), "order_id", "must be an order id")
	v.Check(len(f.UserID) <= 256, "user_id", "is too long")
	if err := v.Err(); err != nil {
		return err
	}
	if f.UserID != "" && f.UserID != cl.Subject {
		if err := PolicyReadAll.Authorize(cl); err != nil {
			return err // 403 naming read:all-invoices
		}
	}
	invs, err := h.svc.List(c.Request().Context(), caller(cl), f)
	if err != nil {
		return err
	}
	out := make([]invoiceJSON, 0, len(invs))
	for _, inv := range invs {
		out = append(out, toJSON(inv))
	}
	return c.JSON(http.StatusOK, out)
}

func (h *HTTP) get(c echo.Context) error    { return byID(c, h.svc.Get) }
func (h *HTTP) pay(c echo.Context) error    { return byID(c, h.svc.Pay) }
func (h *HTTP) refund(c echo.Context) error { return byID(c, h.svc.Refund) }

// byID answers a use case on the invoice named in the path with that invoice.
func byID(c echo.Context, use func(context.Context, app.Caller, string) (domain.Invoice, error)) error {
	cl, err := claimsOf(c)
	if err != nil {
		return err
	}
	inv, err := use(c.Request().Context(), caller(cl), c.Param("id"))
	if err != nil {
		return err
	}
	natsauth.RecordID(c.Request().Context(), events.AttrInvoiceID, inv.ID)
	return c.JSON(http.StatusOK, toJSON(inv))
}
