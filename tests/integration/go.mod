module github.com/authmesh/authmesh/tests/integration

go 1.26
