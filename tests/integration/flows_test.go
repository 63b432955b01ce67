package integration

import (
	"testing"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// testFlows runs the five flows of contract §6 in order, each step within 2 s,
// across the containers (orders asks users over NATS, billing consumes the
// JetStream events, users blocks in devtenant through its Management API).
func testFlows(t *testing.T) {
	for _, f := range api.Flows() {
		t.Run(f.Name, f.Run)
	}

	t.Run("block revokes tokens and cancels pending orders; unblock", func(t *testing.T) {
		// bob, not alice: the other scenarios keep using alice meanwhile.
		old, admin := api.Token(t, apiclient.Bob), api.Token(t, apiclient.Carol)
		who := api.Whoami(t, old)
		pending := api.PendingOrders(t, old)
		api.BlockUser(t, admin, apiclient.Bob, who.UserID)
		api.WaitTokenRefused(t, old, apiclient.Bob, apiclient.FlowDeadline)
		api.WaitBlockCancelled(t, admin, who.UserID, pending, apiclient.FlowDeadline)
		api.UnblockUser(t, admin, apiclient.Bob, who.UserID, old)
	})
}
