module github.com/authmesh/authmesh/tests/apiclient

go 1.26.0
