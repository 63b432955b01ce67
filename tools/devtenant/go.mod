module github.com/authmesh/authmesh/tools/devtenant

go 1.26
