package platform

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// Live publishes status updates to the person they concern, on their live
// feed (mesh.LiveSubject), where their browser listens over WebSocket.
//
// An update is a hint that something changed, not a record of it: it goes
// out on core NATS (no stream, no acknowledgement), and one that is lost is
// lost; the REST API stays the truth. So Publish returns nothing, and a
// failure is logged at debug level (the connection's own errors, a
// permission violation included, are logged by the connection). Callers
// publish only once the change is stored, and only status: never a token.
type Live struct {
	nc  *nats.Conn
	log *slog.Logger
}

// NewLive returns a publisher on nc that logs to log.
func NewLive(nc *nats.Conn, log *slog.Logger) *Live { return &Live{nc: nc, log: log} }

// Live is the app's publisher of live updates, on its NATS connection.
func (a *App) Live() *Live { return NewLive(a.NATS, a.Logger) }

// LiveStatus is all a live update says: which thing (Kind, ID), its Status,
// and for an invoice its order. Nothing else can be sent, so an update
// cannot carry a token, a price or an address.
type LiveStatus struct {
	Kind    string `json:"kind"` // "order", "invoice"
	ID      string `json:"id"`
	OrderID string `json:"order_id,omitempty"`
	Status  string `json:"status"`
}

// Publish sends st, as JSON, to sub on their live feed (one of
// mesh.LiveFeeds this workload publishes): mesh.LiveSubject(sub, feed, st.ID).
// It does not wait for the server: nats.go buffers the message, also while
// reconnecting. An update for nobody (sub empty) is not sent.
func (l *Live) Publish(ctx context.Context, sub, feed string, st LiveStatus) {
	if sub == "" {
		return
	}
	if !subjectToken(feed) || !subjectToken(st.ID) {
		l.log.WarnContext(ctx, "live update not sent: feed or id cannot be a subject token", "feed", feed, "id", st.ID)
		return
	}
	b, err := json.Marshal(st)
	if err != nil {
		l.log.WarnContext(ctx, "live update not sent", "feed", feed, "id", st.ID, "error", err.Error())
		return
	}
	// The subject names the person only as mesh.LiveUID, so it is not logged.
	if err := l.nc.Publish(mesh.LiveSubject(sub, feed, st.ID), b); err != nil {
		l.log.DebugContext(ctx, "live update lost", "feed", feed, "id", st.ID, "error", err.Error())
	}
}

// subjectToken reports whether s fits in one token of a subject.
func subjectToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}
