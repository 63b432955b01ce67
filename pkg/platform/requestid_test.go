package platform

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz/natsauth"
)

// TestRequestIDOverHTTP: a valid inbound X-Request-Id is answered, in the
// handler's context and on every NATS message sent on behalf of the request;
// an invalid, oversized or missing one is replaced there by a fresh id in
// natsauth's one format, and never echoed.
func TestRequestIDOverHTTP(t *testing.T) {
	t.Parallel()
	if natsauth.HeaderRequestID != echo.HeaderXRequestID {
		t.Fatalf("NATS carries the request id in %q, HTTP in %q", natsauth.HeaderRequestID, echo.HeaderXRequestID)
	}
	fresh := regexp.MustCompile(`^[0-9a-f]{32}$`)
	e := echo.New()
	e.Use((&App{}).requestID)
	e.GET("/", func(c echo.Context) error {
		msg, err := natsauth.NewMsg(c.Request().Context(), "s", nil)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{
			"ctx": RequestIDFromContext(c.Request().Context()), "nats": msg.Header.Get(natsauth.HeaderRequestID)})
	})
	// The rule itself is natsauth's (TestAcceptRequestID): here, that the
	// middleware applies it.
	for name, inbound := range map[string]string{
		"valid":           "req-123",
		"oversized":       strings.Repeat("r", 65),
		"forged log line": `{"level":"ERROR"}`,
		"missing":         "",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if inbound != "" {
				req.Header.Set(natsauth.HeaderRequestID, inbound)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			answered := rec.Header().Get(natsauth.HeaderRequestID)
			want := `{"ctx":"` + answered + `","nats":"` + answered + `"}`
			if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != want {
				t.Fatalf("%d %s; want the answered id %q in the context and on NATS", rec.Code, rec.Body, answered)
			}
			if natsauth.AcceptRequestID(inbound) == inbound {
				if answered != inbound {
					t.Errorf("valid %q replaced by %q", inbound, answered)
				}
				return
			}
			if !fresh.MatchString(answered) {
				t.Errorf("invalid %q answered with %q, not a fresh id", inbound, answered)
			}
		})
	}
}
