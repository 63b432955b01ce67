package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/authz"
	"github.com/authmesh/authmesh/pkg/authz/m2m"
	"github.com/authmesh/authmesh/pkg/authz/natsauth"
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/events"
	"github.com/authmesh/authmesh/services/orders/internal/app"
	"github.com/authmesh/authmesh/services/orders/internal/domain"
)

// Streams and subjects (docs/conventions.md).
const (
	EventsStream     = "ORDERS_EVENTS"
	DLQStream        = "ORDERS_DLQ"
	SubjectCreated   = "orders.events.created"
	SubjectCancelled = "orders.events.cancelled"

	ProfileSubject = "authmesh.users.profile"
	VoidSubject    = "authmesh.billing.orders.void"
)

// EventPublisher implements app.Publisher on ORDERS_EVENTS.
type EventPublisher struct {
	js jetstream.JetStream
}

var _ app.Publisher = (*EventPublisher)(nil)

// NewEventPublisher returns a publisher on js.
func NewEventPublisher(js jetstream.JetStream) *EventPublisher { return &EventPublisher{js: js} }

// Seal implements app.Publisher: the envelope keeps the event's own id and
// time (a relayed event was recorded before it is published), its actor is
// the sub of ctx's identity, and Nats-Msg-Id is "<type>:<order id>".
func (p *EventPublisher) Seal(ctx context.Context, e app.Event) (app.SealedEvent, error) {
	var subj string
	var data any
	switch e.Type {
	case app.EventOrderCreated:
		subj = SubjectCreated
		data = events.OrderCreatedData{OrderID: e.Order.ID, OrgID: e.Order.OrgID, TotalCents: e.Order.TotalCents, Currency: e.Order.Currency, Items: eventLines(e.Order.Items)}
	case app.EventOrderCancelled:
		subj = SubjectCancelled
		data = events.OrderCancelledData{OrderID: e.Order.ID, OrgID: e.Order.OrgID, Reason: e.Reason}
	default:
		return app.SealedEvent{}, fmt.Errorf("seal: unknown event type %q", e.Type)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return app.SealedEvent{}, fmt.Errorf("encode event: %w", err)
	}
	sealed, err := natsauth.SealEvent(ctx, subj, string(e.Type)+":"+e.Order.ID,
		natsauth.Envelope{ID: e.ID, Type: string(e.Type), UserID: e.UserID, OccurredAt: e.OccurredAt, Data: raw})
	if err != nil {
		return app.SealedEvent{}, err
	}
	msg, err := json.Marshal(sealed)
	if err != nil {
		return app.SealedEvent{}, fmt.Errorf("encode sealed event: %w", err)
	}
	return app.SealedEvent{Message: msg, PublishBy: sealed.PublishBy()}, nil
}

// Publish implements app.Publisher.
func (p *EventPublisher) Publish(ctx context.Context, e app.SealedEvent) error {
	var sealed natsauth.SealedEvent
	if err := json.Unmarshal(e.Message, &sealed); err != nil {
		return fmt.Errorf("decode sealed event: %w", err)
	}
	if _, err := sealed.Publish(ctx, p.js); err != nil {
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	}
	return nil
}

func eventLines(ls []domain.Line) []events.OrderLine {
	out := make([]events.OrderLine, len(ls))
	for i, l := range ls {
		out[i] = events.OrderLine{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.LineTotalCents}
	}
	return out
}

// LiveUpdates implements app.LiveUpdates on the order owners' live feeds
// (mesh.LiveFeeds: authmesh.live.<uid>.orders.<order id>).
type LiveUpdates struct{ *platform.Live }

// OrderStatus implements app.LiveUpdates.
func (u LiveUpdates) OrderStatus(ctx context.Context, o domain.Order) {
	u.Publish(ctx, o.UserID, "orders", platform.LiveStatus{Kind: "order", ID: o.ID, Status: string(o.Status)})
}

// RequestTimeout bounds calls to other services when ctx has no deadline.
const RequestTimeout = 5 * time.Second

func request(ctx context.Context, nc *nats.Conn, subj string, data []byte) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RequestTimeout)
		defer cancel()
	}
	return natsauth.Request(ctx, nc, subj, data)
}

// Policies of the peer endpoints orders calls (docs/conventions.md), named
// in a 403's scope= so the caller learns what its token lacks.
var (
	profileNeeds = []string{"read:profile"}
	voidNeeds    = []string{"cancel:orders"}
)

// mapServiceError turns a peer's answer into what the caller gets.
//
// A peer that refused the caller's token (orders forwards it) answers with
// an authz code; that becomes an *authz.Error, which pkg/platform renders as
// contract §5 exactly: 401 + WWW-Authenticate error="invalid_token" when the
// token was revoked (or its key retired) between orders' check and the
// peer's, 403 error="insufficient_scope" scope="<needs>" when it lacks the
// peer's permission, 503 + Retry-After when the peer has no keys. A missing
// token or a missing policy at the peer is orders' or the peer's fault, not
// the caller's: 503. notFound is what the peer's 404 means for this call.
func mapServiceError(what string, needs []string, notFound error, err error) error {
	var se *natsauth.ServiceError
	if !errors.As(err, &se) {
		return fmt.Errorf("%s: %w: %w", what, domain.ErrUnavailable, err)
	}
	_, desc, _ := strings.Cut(se.Description, ": ")
	switch se.AuthCode {
	case authz.CodeInvalidToken:
		if desc == "" {
			desc = "the token was rejected"
		}
		return &authz.Error{Code: authz.CodeInvalidToken, Reason: "peer_rejected", Description: desc, Err: se}
	case authz.CodeInsufficientScope:
		return &authz.Error{Code: authz.CodeInsufficientScope, Reason: "peer_requires",
			Description: "requires " + strings.Join(needs, " "), Needed: needs, Err: se}
	case authz.CodeKeysUnavailable:
		return &authz.Error{Code: authz.CodeKeysUnavailable, Reason: "peer_keys_unavailable", Description: desc, Err: se}
	case "":
	default: // missing_token, no_policy: never the caller's doing
		// %v, not %w: the peer's authz code must not reach the caller.
		return fmt.Errorf("%s: %w: %v", what, domain.ErrUnavailable, err)
	}
	switch se.Code {
	case http.StatusConflict:
		return fmt.Errorf("%s: %s: %w", what, se.Description, domain.ErrConflict)
	case http.StatusNotFound:
		if notFound != nil {
			return fmt.Errorf("%s: %w", what, notFound)
		}
	}
	return fmt.Errorf("%s: %w: %w", what, domain.ErrUnavailable, err)
}

// errUserGone answers a profile 404. The token verified (orders' and users'
// checks both passed), yet the tenant has no such user: the user was deleted
// after the token was issued (Auth0 access tokens outlive their user). The
// token speaks for nobody, so the answer is 401 invalid_token: signing in
// again is the only remedy, and it correctly fails. A 503 would invite
// retries that can never succeed, and 404 "no such order" would be false.
var errUserGone = &authz.Error{Code: authz.CodeInvalidToken, Reason: "user_not_found",
	Description: "the token's user does not exist"}

// ProfileClient implements app.Profiles over authmesh.users.profile.
type ProfileClient struct {
	nc *nats.Conn
}

var _ app.Profiles = (*ProfileClient)(nil)

// NewProfileClient returns a client on nc.
func NewProfileClient(nc *nats.Conn) *ProfileClient { return &ProfileClient{nc: nc} }

type profileReply struct {
	UserID          string         `json:"user_id"`
	ShippingAddress *addressRecord `json:"shipping_address"`
}

// ShippingAddress implements app.Profiles with the caller's identity from ctx (natsauth exchanges it for a transaction token).
func (c *ProfileClient) ShippingAddress(ctx context.Context) (*domain.Address, error) {
	reply, err := request(ctx, c.nc, ProfileSubject, nil)
	if err != nil {
		return nil, mapServiceError("users profile", profileNeeds, errUserGone, err)
	}
	var p profileReply
	if err := json.Unmarshal(reply.Data, &p); err != nil {
		return nil, fmt.Errorf("users profile: bad reply: %w: %w", domain.ErrUnavailable, err)
	}
	if cl, ok := claimsSubject(ctx); ok && p.UserID != "" && p.UserID != cl {
		// Never ship one user's order to another user's address.
		return nil, fmt.Errorf("users profile answered for another user: %w", domain.ErrUnavailable)
	}
	if p.ShippingAddress == nil {
		return nil, nil
	}
	a := p.ShippingAddress
	return &domain.Address{Line1: a.Line1, City: a.City, PostalCode: a.PostalCode, Country: a.Country}, nil
}

// BillingClient implements app.Billing over authmesh.billing.orders.void.
type BillingClient struct {
	nc *nats.Conn
}

var _ app.Billing = (*BillingClient)(nil)

// NewBillingClient returns a client on nc.
func NewBillingClient(nc *nats.Conn) *BillingClient { return &BillingClient{nc: nc} }

// VoidOrder implements app.Billing with the token of ctx (the caller's, or
// the service's under natsauth.AsService).
func (c *BillingClient) VoidOrder(ctx context.Context, orderID string) error {
	b, _ := json.Marshal(map[string]string{"order_id": orderID})
	if _, err := request(ctx, c.nc, VoidSubject, b); err != nil {
		return mapServiceError("billing void", voidNeeds, domain.ErrNotFound, err)
	}
	return nil
}

// ServiceIdentity implements app.ServiceIdentity with a client-credentials
// token source.
type ServiceIdentity struct {
	ts      m2m.TokenSource
	subject string
}

var _ app.ServiceIdentity = (*ServiceIdentity)(nil)

// NewServiceIdentity returns the identity of M2M client clientID, whose tokens
// have sub "<client id>@clients" (Auth0's convention).
func NewServiceIdentity(ts m2m.TokenSource, clientID string) *ServiceIdentity {
	return &ServiceIdentity{ts: ts, subject: clientID + "@clients"}
}

// Context implements app.ServiceIdentity. The token is fetched up front so a
// tenant outage surfaces here, before any state changes.
func (s *ServiceIdentity) Context(ctx context.Context) (context.Context, error) {
	if _, err := s.ts.Token(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	}
	return natsauth.AsService(ctx, s.ts), nil
}

// Subject implements app.ServiceIdentity.
func (s *ServiceIdentity) Subject() string { return s.subject }

func claimsSubject(ctx context.Context) (string, bool) {
	c, ok := authz.ClaimsFromContext(ctx)
	if !ok {
		return "", false
	}
	return c.Subject, true
}
