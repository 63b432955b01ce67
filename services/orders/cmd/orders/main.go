// Command orders is the orders service (docs/contract.md §4).
package main

import (
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/orders/internal/service"
)

func main() { platform.Main(service.Name, service.Run) }
