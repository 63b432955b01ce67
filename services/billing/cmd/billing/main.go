// Command billing is the billing service (see the module README).
package main

import (
	"context"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/billing/internal/service"
)

func main() { platform.Main("billing", run) }

func run(ctx context.Context, cfg platform.Config) error {
	return service.Run(ctx, cfg, platform.Options{})
}
