module github.com/authmesh/authmesh/pkg/platform

go 1.26
