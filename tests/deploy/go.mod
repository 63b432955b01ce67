module github.com/authmesh/authmesh/tests/deploy

go 1.26
