package integration

import "testing"

// TestSystem runs every scenario against one shared stack, in an order where
// none disturbs the next: the read-mostly scenarios first, the load while the
// stack is whole, then the faults, each of which restores what it broke, and
// the key rotation last because it changes the tenant's keys for good.
// Run one with -run 'TestSystem/<name>' (the stack is built either way).
func TestSystem(t *testing.T) {
	requireStack(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"flows", testFlows},
		{"order trace in jaeger", testOrderTraceInJaeger},
		{"attack tokens", testAttackTokens},
		{"events carry no access token", testEventsCarryNoAccessToken},
		{"compromised billing on the cluster", testCompromisedBilling},
		{"block mid-session", testBlockMidSession},
		{"blocked live connection", testBlockedLiveConnection},
		{"load", testLoad},
		{"devtenant down", testIdentityProviderDown},
		{"billing stopped", testBillingStopped},
		{"consumer killed before ack", testConsumerKilled},
		{"nats node killed", testNATSNodeKilled},
		{"tts killed", testTTSKilled},
		{"key rotation", testKeyRotation},
	} {
		t.Run(sc.name, sc.run)
	}
}
