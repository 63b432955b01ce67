package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// gather is how long Kick listens for the servers' connection lists: every
// server of the cluster answers one ping.
const gather = 250 * time.Millisecond

// connz is the part of a server's $SYS.REQ.SERVER.PING.CONNZ answer Kick reads.
type connz struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data struct {
		Conns []struct {
			CID  uint64 `json:"cid"`
			User string `json:"authorized_user"`
		} `json:"connections"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// Kick closes every connection of the person sub on every server, through
// sys, a connection of the callout's system user (mesh.SystemPermissions).
// The callout refuses their reconnect, since the validator sees the
// revocation. It returns how many connections it closed.
func Kick(ctx context.Context, sys *nats.Conn, sub string) (int, error) {
	inbox := mesh.SystemInboxPrefix + "." + nats.NewInbox()
	replies, err := sys.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("callout: kick: %w", err)
	}
	defer func() { _ = replies.Unsubscribe() }()
	// A callout user's authorized_user is the name it was issued with:
	// the person's sub.
	q, _ := json.Marshal(map[string]any{"acc": mesh.LiveAccount, "auth": true, "user": sub, "limit": 100000})
	if err := sys.PublishRequest("$SYS.REQ.SERVER.PING.CONNZ", inbox, q); err != nil {
		return 0, fmt.Errorf("callout: kick: %w", err)
	}
	type conn struct {
		server string
		cid    uint64
	}
	var found []conn
	deadline := time.Now().Add(gather)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		m, err := replies.NextMsg(wait)
		if err != nil {
			break // the window closed
		}
		var z connz
		if json.Unmarshal(m.Data, &z) != nil || z.Error != nil {
			continue
		}
		for _, c := range z.Data.Conns {
			if c.User == sub {
				found = append(found, conn{z.Server.ID, c.CID})
			}
		}
	}
	kicked := 0
	for _, c := range found {
		body, _ := json.Marshal(map[string]uint64{"cid": c.cid})
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := sys.RequestWithContext(rctx, "$SYS.REQ.SERVER."+c.server+".KICK", body)
		cancel()
		if err != nil {
			return kicked, fmt.Errorf("callout: kick cid %d on %s: %w", c.cid, c.server, err)
		}
		kicked++
	}
	return kicked, nil
}
