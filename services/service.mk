# The rules every service Makefile includes after setting SERVICE and PORT:
# test, build and image for one service on its own.
# Works outside the workspace (GOWORK=off): go.mod replaces the shared modules by path.

SHELL   := /usr/bin/env bash
GO      ?= go
ROOT    := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
BIN     := $(ROOT)/bin
IMAGE   ?= authmesh/$(SERVICE)
TAG     ?= dev
export GOWORK ?= off
export DOCKER_BUILDKIT=0

.PHONY: test build image
test: ## go vet and the tests with -race.
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

build: ## Static linux binary at bin/$(SERVICE) (what the image copies).
	mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/$(SERVICE) ./cmd/$(SERVICE)
	cp /etc/ssl/certs/ca-certificates.crt $(BIN)/ca-certificates.crt

image: build ## Container image $(IMAGE):$(TAG), FROM scratch (services/Dockerfile, shared by the three services).
	docker build -f $(ROOT)/services/Dockerfile --build-arg SERVICE=$(SERVICE) --build-arg PORT=$(PORT) \
	  -t $(IMAGE):$(TAG) $(ROOT)
