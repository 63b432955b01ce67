package mesh

import (
	"encoding/base64"
	"slices"
	"strings"
)

// LiveAccount holds the NATS connections of people (the SPA, mobile apps):
// each may only subscribe to its own live feeds.
const LiveAccount = "LIVE"

// LivePrefix starts every live-update subject:
// authmesh.live.<uid>.<kind>.<id>.
const LivePrefix = "authmesh.live"

// LiveFeed is one kind of status update a workload publishes to the person
// it concerns, and the permission their token must hold to receive it.
type LiveFeed struct {
	Publisher  string // the workload publishing it
	Kind       string // "orders": authmesh.live.<uid>.orders.<order id>
	Permission string // what the token must hold to subscribe
}

// LiveFeeds are the mesh's live updates. They carry status only, never a token.
var LiveFeeds = []LiveFeed{
	{Publisher: Orders, Kind: "orders", Permission: "read:orders"},
	{Publisher: Billing, Kind: "invoices", Permission: "read:invoices"},
}

// LiveUID is a person's subject token in live subjects: the base64url
// (unpadded) encoding of their token's sub, which may hold '.', '*' or
// '>' that a subject cannot.
func LiveUID(sub string) string { return base64.RawURLEncoding.EncodeToString([]byte(sub)) }

// LiveSubject is the subject of one update of kind about id, for sub.
func LiveSubject(sub, kind, id string) string {
	return LivePrefix + "." + LiveUID(sub) + "." + kind + "." + id
}

// liveWildcard is what publisher may publish, for every person.
func (f LiveFeed) wildcard() string { return LivePrefix + ".*." + f.Kind + ".>" }

// liveFeeds are the feeds w publishes.
func (w Workload) liveFeeds() []LiveFeed {
	return where(LiveFeeds, func(f LiveFeed) bool { return f.Publisher == w.Name })
}

// PersonPermissions are the allow lists of a person's connection: subscribe
// to their own feeds that their token's permissions admit, publish nothing.
// The auth callout grants exactly these.
func PersonPermissions(sub string, permissions []string) Permissions {
	var p Permissions
	uid := LiveUID(sub)
	for _, f := range LiveFeeds {
		if slices.Contains(permissions, f.Permission) {
			p.Subscribe = append(p.Subscribe, strings.Join([]string{LivePrefix, uid, f.Kind, ">"}, "."))
		}
	}
	return p
}
