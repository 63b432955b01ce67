// Command billing is the billing service (see the module README).
package main

import (
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/billing/internal/service"
)

func main() { platform.Main(service.Name, service.Run) }
