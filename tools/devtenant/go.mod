module github.com/authmesh/authmesh/tools/devtenant

go 1.26

require (
	github.com/go-jose/go-jose/v4 v4.1.9
	gopkg.in/yaml.v3 v3.0.1
)
