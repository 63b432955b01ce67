// Command users is the authmesh users service (contract §4): profiles, user
// management over the tenant's Management API, block/unblock with instant
// token revocation, role assignment, and the profile endpoint on NATS.
package main

import (
	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/services/users/internal/service"
)

func main() { platform.Main(service.Name, service.Run) }
