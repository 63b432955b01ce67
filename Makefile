# authmesh — run `make help` for the targets.

SHELL        := /usr/bin/env bash
GO           ?= go
# tools/jaeger is left out of test and lint on purpose: it holds no code of ours, only Jaeger pinned
# as a tool, outside go.work (see tools/jaeger/build.sh); tidy covers it.
MODULES      := $(patsubst ./%/go.mod,%,$(shell find . -name go.mod -not -path './.data/*' -not -path './tools/jaeger/*' | sort))
SERVICES     := users orders billing tts
STATICCHECK  := honnef.co/go/tools/cmd/staticcheck@v0.7.0
COMPOSE      := $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
TEST_FLAGS   ?= -race -count=1 -timeout 20m
BENCH_FLAGS  ?= -run '^$$' -bench . -benchmem -count 1 -benchtime 2s
export DOCKER_BUILDKIT := 0
export COMPOSE_DOCKER_CLI_BUILD := 0
# TRACING=1 (make run, make up, make images): Jaeger runs beside the stack and the services export
# their spans to it (README "Tracing").
TRACING_ON   := $(filter 1 yes true on,$(TRACING))
ifneq ($(TRACING_ON),)
export COMPOSE_PROFILES := tracing
export AUTHMESH_OTLP_ENDPOINT := http://jaeger:4318
endif

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_%\/-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: test
test: $(addprefix test/,$(MODULES)) ## Run every module's tests with -race (Docker-backed tests skip loudly without an engine).

test/%: ## Test one module, e.g. make test/pkg/authz
	cd $* && $(GO) test $(TEST_FLAGS) ./...

.PHONY: lint
lint: $(addprefix lint/,$(MODULES)) ## go vet and staticcheck on every module.

lint/%:
	cd $* && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...

.PHONY: tidy
tidy: $(addprefix tidy/,$(MODULES) tools/jaeger) ## go mod tidy in every module.

tidy/%:
	cd $* && $(GO) mod tidy

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: nats-config
nats-config: ## Regenerate deploy/nats/accounts.conf, keys.conf and docs/conventions.md's mesh table from pkg/platform/mesh.
	cd pkg/platform/mesh && $(GO) generate .

.PHONY: bench
bench: binaries ## Benchmarks side by side with their baselines (Go, wrk, the stack under load); writes BENCHMARKS.md and docs/bench/*.png.
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	@if docker info >/dev/null 2>&1; then echo "building the images, for their sizes"; $(MAKE) --no-print-directory k8s-images >/dev/null \
	  || echo "make bench: the image build failed, so the report has no image sizes"; \
	  else echo "make bench: no Docker engine, so the report has no image sizes"; fi
	$(GO) run ./tools/bench $(BENCH_ARGS)

bench/%: ## Only the Go benchmarks of one module, e.g. make bench/pkg/authz
	cd $* && $(GO) test $(BENCH_FLAGS) ./...

.PHONY: run
run: ## Start devtenant, embedded NATS, the three services, the Transaction Token Service and the SPA on this machine (no Docker); TRACING=1 adds Jaeger.
	$(GO) build -o .data/bin/devstack ./tools/devstack/cmd/devstack && .data/bin/devstack $(if $(TRACING_ON),-tracing)

.PHONY: jaeger
jaeger: ## Build Jaeger v2 from tools/jaeger into bin/jaeger (minutes once; cached until its go.mod/go.sum change).
	@bash tools/jaeger/build.sh >/dev/null

.PHONY: trace
trace: ## Print the latest order's trace from Jaeger as a waterfall (or TRACE=<trace id>, ORDER=<order id>; JAEGER=<query URL>).
	@$(GO) run ./tools/trace/cmd/trace $(if $(TRACE),-id '$(TRACE)') $(if $(ORDER),-order '$(ORDER)') $(if $(JAEGER),-jaeger '$(JAEGER)')

.PHONY: token
token: ## Print an access token: make token USER=alice (or CLIENT=orders-service).
	@$(GO) run ./tools/devtenant/cmd/devtenant token $(if $(CLIENT),--client $(CLIENT),--user $(or $(USER_EMAIL),$(USER))@authmesh.dev)

IMAGE_PKGS := github.com/nats-io/nats-server/v2 ./tools/devstack/cmd/httpprobe ./tools/devstack/cmd/webserve \
              ./tools/devtenant/cmd/devtenant $(foreach s,$(SERVICES),./services/$(s)/cmd/$(s))

.PHONY: binaries
binaries: ## Static linux binaries the images copy (bin/).
	mkdir -p bin/empty && cp /etc/ssl/certs/ca-certificates.crt bin/
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o bin/ $(IMAGE_PKGS)

.PHONY: images
images: binaries $(if $(TRACING_ON),jaeger) ## Build every image FROM scratch (no registry needed); TRACING=1 adds Jaeger's.
	$(COMPOSE) build

K8S_IMAGES := nats:deploy/nats/Dockerfile devtenant:tools/devtenant/Dockerfile tts:services/tts/Dockerfile
# users, orders and billing share services/Dockerfile, built as <name>:<port>; each one's
# Makefile names its port.
SERVICE_IMAGES = $(foreach s,$(filter-out tts,$(SERVICES)),$(s):$(shell sed -n 's/^PORT *:= *//p' services/$(s)/Makefile))

.PHONY: k8s-images
k8s-images: binaries ## The images deploy/k8s uses, tagged authmesh/<name>:dev (then e.g. kind load docker-image).
	@for i in $(K8S_IMAGES); do echo "authmesh/$${i%%:*}:dev"; \
	  docker build -q -f "$${i#*:}" -t "authmesh/$${i%%:*}:dev" . >/dev/null || exit 1; done
	@for i in $(SERVICE_IMAGES); do echo "authmesh/$${i%%:*}:dev"; \
	  docker build -q -f services/Dockerfile --build-arg SERVICE="$${i%%:*}" --build-arg PORT="$${i#*:}" \
	    -t "authmesh/$${i%%:*}:dev" . >/dev/null || exit 1; done

.PHONY: up
up: images ## Build the images and start the stack with docker compose (health-gated); TRACING=1 adds Jaeger.
	$(COMPOSE) up -d

.PHONY: smoke
smoke: ## Compose smoke test: build, up, one full flow, down -v.
	bash deploy/compose-smoke.sh

.PHONY: down
down: ## Stop the compose stack and remove its volumes.
	$(COMPOSE) --profile tracing down -v --remove-orphans
