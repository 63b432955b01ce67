package integration

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// testBlockMidSession blocks bob while he is using all three services: each
// service refuses his token with 401 invalid_token within 2 s of the block
// being acknowledged, and never accepts it again.
func testBlockMidSession(t *testing.T) {
	tok, admin := api.Token(t, apiclient.Bob), api.Token(t, apiclient.Carol)
	who := api.Whoami(t, tok)

	type seen struct {
		firstRejected time.Time
		acceptedAfter []string // 2xx after the first rejection
		other         []string // anything but 200 or 401 invalid_token
	}
	results := make([]seen, len(apiclient.AuthedRoutes))
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, rt := range apiclient.AuthedRoutes {
		wg.Go(func() {
			res := &results[i]
			for ctx.Err() == nil {
				r, err := api.TryCall(http.MethodGet, rt.Svc, rt.Path, tok, nil)
				at := time.Now()
				switch {
				case err != nil:
					res.other = append(res.other, err.Error())
				case r.Status == http.StatusOK:
					if !res.firstRejected.IsZero() {
						res.acceptedAfter = append(res.acceptedAfter, at.Format(time.StampMilli))
					}
				case apiclient.WantInvalidToken(r) == nil:
					if res.firstRejected.IsZero() {
						res.firstRejected = at
					}
				default:
					res.other = append(res.other, r.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	api.BlockUser(t, admin, apiclient.Bob, who.UserID)
	blocked := time.Now()
	time.Sleep(apiclient.FlowDeadline + time.Second)
	stop()
	wg.Wait()

	for i, rt := range apiclient.AuthedRoutes {
		res := results[i]
		switch {
		case res.firstRejected.IsZero():
			t.Errorf("%s still accepts bob's token %v after the block", rt.Svc, time.Since(blocked).Round(time.Millisecond))
		case res.firstRejected.Sub(blocked) > apiclient.FlowDeadline:
			t.Errorf("%s refused bob's token %v after the block, want within %v", rt.Svc, res.firstRejected.Sub(blocked), apiclient.FlowDeadline)
		default:
			t.Logf("%s refuses bob's token %v after the block was acknowledged", rt.Svc, max(0, res.firstRejected.Sub(blocked)).Round(time.Millisecond))
		}
		if len(res.acceptedAfter) > 0 {
			t.Errorf("%s accepted bob's token again after refusing it, at %v", rt.Svc, res.acceptedAfter)
		}
		if len(res.other) > 0 {
			t.Errorf("%s answered neither 200 nor 401 invalid_token: %s", rt.Svc, fmt.Sprint(res.other[:min(5, len(res.other))]))
		}
	}
}
