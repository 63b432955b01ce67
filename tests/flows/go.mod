module github.com/authmesh/authmesh/tests/flows

go 1.26
