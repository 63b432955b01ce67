package ports

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/tts/internal/keys"
)

// JWKSPath is where the public halves of the signing keys are served.
const JWKSPath = "/.well-known/jwks.json"

// RegisterHTTP adds the JWKS route to r; current is the key set in use
// (it changes when the key file is rotated).
func RegisterHTTP(r platform.Router, current func() *keys.Set) {
	r.Route(http.MethodGet, JWKSPath, authz.Public(), func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=60")
		return c.JSON(http.StatusOK, current().JWKS())
	})
}
