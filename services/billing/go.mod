module github.com/authmesh/authmesh/services/billing

go 1.26

require (
	github.com/authmesh/authmesh/pkg/authz v0.0.0
	github.com/authmesh/authmesh/pkg/platform v0.0.0
)

replace (
	github.com/authmesh/authmesh/pkg/authz => ../../pkg/authz
	github.com/authmesh/authmesh/pkg/platform => ../../pkg/platform
)
