module github.com/authmesh/authmesh/tests/browser

go 1.26
