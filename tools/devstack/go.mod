module github.com/authmesh/authmesh/tools/devstack

go 1.26
