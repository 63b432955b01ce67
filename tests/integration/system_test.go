package integration

import "testing"

// TestSystem runs every scenario against one shared stack, in an order where
// none disturbs the next: the read-mostly scenarios first, the load while the
// stack is whole, then the faults, each of which restores what it broke.
// Run one with -run 'TestSystem/<name>'.
func TestSystem(t *testing.T) {
	requireStack(t)
	t.Run("flows", testFlows)
	t.Run("attack tokens", testAttackTokens)
}
