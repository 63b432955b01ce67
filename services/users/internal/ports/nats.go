package ports

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/micro"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/services/users/internal/app"
	"github.com/authmesh/authmesh/services/users/internal/domain"
)

// NATS names of the profile endpoint (docs/conventions.md).
const (
	ServiceName     = "users"
	ProfileEndpoint = "profile"
	ProfileSubject  = "authmesh.users.profile"
)

// PolicyProfile is the profile endpoint's policy: the caller's own profile,
// so only user tokens.
var PolicyProfile = authz.RequireAll("read:profile").Users()

// ProfileJSON is the profile endpoint's reply.
type ProfileJSON struct {
	UserID          string       `json:"user_id"`
	Email           string       `json:"email"`
	Name            string       `json:"name"`
	ShippingAddress *addressJSON `json:"shipping_address"`
}

// RegisterNATS registers users/profile on svc: it replies with the
// profile of the caller (the token's sub), never anyone else's. While the
// tenant is unreachable it still answers (app.Service.Profile), so orders
// can take orders with the shipping address.
func RegisterNATS(svc *natsauth.Service, users *app.Service, log *slog.Logger) error {
	return svc.AddEndpoint(ProfileEndpoint, ProfileSubject, PolicyProfile, func(ctx context.Context, req micro.Request) {
		cl, ok := authz.ClaimsFromContext(ctx)
		if !ok {
			_ = req.Error("401", "missing token", nil)
			return
		}
		u, err := users.Profile(ctx, cl.Subject)
		switch {
		case errors.Is(err, domain.ErrNotFound):
			_ = req.Error("404", "user not found", nil)
			return
		case errors.Is(err, domain.ErrUnavailable):
			_ = req.Error("503", "a dependency is unavailable; retry later", nil)
			return
		case err != nil:
			log.ErrorContext(ctx, "profile endpoint failed", slog.String("error", err.Error()))
			_ = req.Error("500", "internal error", nil)
			return
		}
		_ = req.RespondJSON(ProfileJSON{UserID: u.ID, Email: u.Email, Name: u.Name, ShippingAddress: toAddressJSON(u.ShippingAddress)})
	})
}
