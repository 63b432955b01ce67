module github.com/authmesh/authmesh/tools/bench

go 1.26
