package ports

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/billing/internal/app"
	"github.com/authmesh/authmesh/services/billing/internal/domain"
)

// VoidSubject is the subject of the void-order endpoint (docs/conventions.md).
const VoidSubject = "authmesh.billing.orders.void"

type voidRequest struct {
	OrderID string `json:"order_id"`
}

// RegisterNATS adds the void-order endpoint to svc; ordersClient is the
// orders service's client id.
func RegisterNATS(svc *natsauth.Service, a *app.Service, ordersClient string, log *slog.Logger) error {
	return svc.AddEndpoint("void-order", VoidSubject, PolicyVoid(ordersClient), func(ctx context.Context, req micro.Request) {
		cl, ok := authz.ClaimsFromContext(ctx)
		if !ok {
			_ = req.Error(strconv.Itoa(http.StatusUnauthorized), "unauthorized", nil)
			return
		}
		var in voidRequest
		if err := json.Unmarshal(req.Data(), &in); err != nil || in.OrderID == "" {
			_ = req.Error(strconv.Itoa(http.StatusBadRequest), `want {"order_id":"..."}`, nil)
			return
		}
		inv, err := a.VoidOrder(ctx, caller(cl), in.OrderID)
		if err != nil {
			code, desc := microError(err)
			if code == "500" {
				log.Error("void-order failed", slog.String("order_id", in.OrderID), slog.String("error", err.Error()))
			}
			_ = req.Error(code, desc, nil)
			return
		}
		_ = req.RespondJSON(toJSON(inv))
	})
}

func microError(err error) (string, string) {
	switch {
	case errors.Is(err, domain.ErrConflict):
		return strconv.Itoa(http.StatusConflict), "the invoice is already paid"
	case errors.Is(err, domain.ErrNotFound):
		return strconv.Itoa(http.StatusNotFound), "invoice not found"
	case errors.Is(err, domain.ErrInvalid):
		return strconv.Itoa(http.StatusBadRequest), "invalid order id"
	default:
		return strconv.Itoa(http.StatusInternalServerError), "internal error"
	}
}
