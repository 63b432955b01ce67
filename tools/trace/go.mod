module github.com/authmesh/authmesh/tools/trace

go 1.26.0
