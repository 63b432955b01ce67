#!/usr/bin/env bash
# Compose smoke test, from a clean clone: build the static binaries and the images (no registry),
# start the stack, wait until every container is healthy (the services reach NATS only through the
# TTS's auth callout), check NATS's WebSocket listener, run one full flow with curl (alice's
# token, create an order, its invoice appears, pay it, the order is paid; the Transaction Token
# Service publishes its ES256 keys), then `down -v`.
# Exits non-zero on any failure and prints the containers' logs.
set -euo pipefail
cd "$(dirname "$0")/.."

export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 CGO_ENABLED=0 GOOS=linux
PROJECT=${COMPOSE_PROJECT_NAME:-authmesh-smoke}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-240}
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE+=(-p "$PROJECT" -f docker-compose.yml)

log() { printf '[compose-smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
failure=$(mktemp) # fail may run in a command substitution's subshell
fail() { echo "$*" >"$failure"; log "FAIL: $*"; exit 1; }
for tool in go docker curl jq; do command -v "$tool" >/dev/null || fail "$tool is not installed"; done

started=0
cleanup() {
  status=$?
  if [ "$started" = 1 ]; then
    if [ "$status" != 0 ]; then
      log "container status:"; "${COMPOSE[@]}" ps >&2 || true
      # The services' logs last and the reason again after them: a CI report
      # that shows only the tail of the output must still show both.
      for svc in $("${COMPOSE[@]}" config --services | sort -r); do
        case $svc in users|orders|billing) continue ;; esac
        log "logs of $svc:"; "${COMPOSE[@]}" logs --no-color --tail=40 "$svc" >&2 || true
      done
      for svc in users orders billing; do
        log "logs of $svc (without the polling GETs that answered 200):"
        "${COMPOSE[@]}" logs --no-color --tail=400 "$svc" | grep -v '"method":"GET".*"status":200,' | tail -n 120 >&2 || true
      done
      [ ! -s "$failure" ] || log "FAIL: $(cat "$failure")"
    fi
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || log "down -v failed"
  fi
  rm -f "$failure"
  [ "$status" = 0 ] && log "PASS" || log "exit status $status"
}
trap cleanup EXIT

for port in 8400 8401 8402 8403 8404 8406 4222 8222 8405; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is in use (make run or make up still running?)"; fi
done

log "building static binaries into bin/"
mkdir -p bin/empty
cp /etc/ssl/certs/ca-certificates.crt bin/ca-certificates.crt
go build -trimpath -ldflags='-s -w' -o bin/ \
  github.com/nats-io/nats-server/v2 ./tools/devstack/cmd/httpprobe ./tools/devtenant/cmd/devtenant \
  ./services/users/cmd/users ./services/orders/cmd/orders ./services/billing/cmd/billing ./services/tts/cmd/tts \
  ./tools/devstack/cmd/webserve

log "building images"
"${COMPOSE[@]}" build --quiet 2>/dev/null || "${COMPOSE[@]}" build
started=1
"${COMPOSE[@]}" up -d

# jaeger runs only under the profile tracing (make up TRACING=1); docker-compose v1 lists it anyway.
want=$("${COMPOSE[@]}" config --services | grep -vx jaeger | wc -l)
log "waiting for all $want containers to be healthy (up to ${HEALTH_TIMEOUT}s)"
deadline=$((SECONDS + HEALTH_TIMEOUT))
while :; do
  ids=$("${COMPOSE[@]}" ps -q)
  [ "$(wc -w <<<"$ids")" -eq "$want" ] || fail "expected $want containers, got: $ids"
  states=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' $ids)
  grep -qv ' healthy$' <<<"$states" || break
  if grep -Eq ' (exited|dead) ' <<<"$states"; then fail "a container stopped: $states"; fi
  [ $SECONDS -lt $deadline ] || fail "not healthy in ${HEALTH_TIMEOUT}s: $(grep -v ' healthy$' <<<"$states" | tr '\n' ';')"
  sleep 2
done
log "healthy: $(tr '\n' ';' <<<"$states")"

# Healthy means the process runs; ready means NATS and the signing keys are there (the services'
# include the TTS's keys, check tts_keys). The services have no NATS password: their connection
# exists only because the TTS's auth callout accepted their client-credentials token, so their
# readiness is also the proof that the callout works.
for port in 8406 8401 8402 8403; do
  for _ in $(seq 1 60); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:$port/readyz")" = 200 ] && break
    sleep 1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:$port/readyz")" = 200 ] || fail "localhost:$port/readyz is not 200"
done

# api METHOD URL [BODY] -> body on stdout; fails unless the status is WANT (default 200).
api() {
  local method=$1 url=$2 body=${3:-} want=${WANT:-200} out code
  out=$(mktemp)
  code=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$url" \
    -H "Authorization: Bearer $TOKEN" ${body:+-H 'Content-Type: application/json' -d "$body"})
  if [ "$code" != "$want" ]; then fail "$method $url: status $code, want $want: $(head -c 500 "$out")"; fi
  cat "$out"; rm -f "$out"
}

log "NATS: the services are connected through the TTS's auth callout"
# The TTS counts what its callout decided: at least one allowed workload per service (more after
# token renewals or reconnects).
allowed=$(curl -sf http://localhost:8406/metrics | awk '/^nats_callout_decisions_total\{/ && /kind="workload"/ && /result="allowed"/ {n += $NF} END {print n + 0}') \
  || fail "no /metrics on the TTS"
[ "${allowed%.*}" -ge 3 ] || fail "the TTS's callout allowed $allowed workload connections, want at least 3 (users, orders, billing)"
# Those on nats-1 (the one node whose monitoring port is published) are the users the callout
# issued: named after the workload, in its own account.
connz=$(curl -sf 'http://localhost:8222/connz?auth=true&limit=1000') || fail "no /connz on nats-1"
jq -e '[.connections[] | select(.name == "users" or .name == "orders" or .name == "billing")]
  | all(.account == (.name | ascii_upcase) and .authorized_user == .name)' <<<"$connz" >/dev/null \
  || fail "a service is on NATS as another user or account: $(jq -c '[.connections[] | {name, account, authorized_user}]' <<<"$connz")"

log "NATS: the WebSocket listener answers an upgrade on ws://localhost:8405"
# 101 Switching Protocols, then the server's INFO frame; curl waits for more, so bound it.
ws=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://localhost:8405/ \
  -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
  -H 'Sec-WebSocket-Key: YXV0aG1lc2gtc21va2UtdA==' || true)
[ "$ws" = 101 ] || fail "ws://localhost:8405 answered $ws to a WebSocket upgrade, want 101"

log "tts: its JWKS publishes ES256 public keys (current and next), no private part"
jwks=$(curl -sS -f http://localhost:8406/.well-known/jwks.json) || fail "the TTS's JWKS does not answer"
jq -e '(.keys | length >= 2) and all(.keys[]; .kty == "EC" and .crv == "P-256" and .alg == "ES256" and (.kid | length > 0) and (has("d") | not))' <<<"$jwks" >/dev/null \
  || fail "the TTS's JWKS is not two or more public ES256 keys: $(head -c 500 <<<"$jwks")"

log "token for alice (password grant)"
TOKEN=$(curl -sS -f http://localhost:8400/oauth/token \
  -d grant_type=password -d username=alice@authmesh.dev -d password=dev-password \
  -d client_id=authmesh-cli -d audience=https://api.authmesh.dev -d 'scope=openid profile email' | jq -er .access_token) \
  || fail "no token for alice"

log "create an order"
order=$(WANT=201 api POST http://localhost:8402/v1/orders '{"items":[{"sku":"mug","quantity":2},{"sku":"tea-green","quantity":1}]}')
order_id=$(jq -er .id <<<"$order") || fail "order without id: $order"
[ "$(jq -r .status <<<"$order")" = pending ] || fail "new order not pending: $order"
[ "$(jq -r .total_cents <<<"$order")" = 2850 ] || fail "order total is not 2850: $order"

log "its invoice appears in billing"
# The contract's flows take well under 2 s; the first order on a cluster that has just formed may
# take longer (stream and consumer leaders settling), so wait up to 15 s and say how long it took.
invoice_id=
started_at=$(date +%s%N)
deadline=$((SECONDS + 15))
while [ $SECONDS -lt $deadline ]; do
  invoices=$(api GET "http://localhost:8403/v1/invoices?order_id=$order_id")
  if [ "$(jq length <<<"$invoices")" -ge 1 ]; then
    [ "$(jq length <<<"$invoices")" = 1 ] || fail "more than one invoice: $invoices"
    invoice_id=$(jq -er '.[0].id' <<<"$invoices")
    [ "$(jq -r '.[0].status' <<<"$invoices")" = open ] || fail "invoice not open: $invoices"
    [ "$(jq -r '.[0].amount_cents' <<<"$invoices")" = 2850 ] || fail "invoice amount is not 2850: $invoices"
    break
  fi
  sleep 0.1
done
[ -n "$invoice_id" ] || fail "no invoice for order $order_id within 15s; billing's consumer: $(curl -s 'http://localhost:8222/jsz?consumers=true&accounts=true' | jq -c '[.account_details[]?.stream_detail[]? | select(.name == "ORDERS_EVENTS") | .consumer_detail[]? | {name, delivered, ack_floor, num_pending, num_ack_pending, num_redelivered, leader: .cluster.leader}]' 2>/dev/null)"
took_ms=$(( ($(date +%s%N) - started_at) / 1000000 ))
if [ "$took_ms" -gt 2000 ]; then log "WARN: the invoice took ${took_ms} ms (the contract's flows take < 2 s)"; else log "invoice after ${took_ms} ms"; fi

log "pay it"
paid=$(api POST "http://localhost:8403/v1/invoices/$invoice_id/pay")
[ "$(jq -r .status <<<"$paid")" = paid ] || fail "invoice not paid: $paid"

log "the order becomes paid"
status=
deadline=$((SECONDS + 15))
while [ $SECONDS -lt $deadline ]; do
  status=$(api GET "http://localhost:8402/v1/orders/$order_id" | jq -r .status)
  [ "$status" = paid ] && break
  sleep 0.1
done
[ "$status" = paid ] || fail "order $order_id is $status, want paid"

log "web: the SPA is served on :8404"
# Read the page whole: `curl | grep -q` fails under pipefail when grep stops reading early.
page=$(curl -sf http://localhost:8404/) || fail "http://localhost:8404/ does not answer"
grep -q '<script' <<<"$page" || fail "http://localhost:8404/ does not serve the SPA"

log "NATS: streams replicated x3"
curl -sf 'http://localhost:8222/jsz?accounts=true&streams=true&config=true' | jq -e '[.account_details[].stream_detail[] | select(.config.num_replicas != 3)] | length == 0' >/dev/null \
  || fail "a stream is not replicated x3: $(curl -s 'http://localhost:8222/jsz?accounts=true&streams=true&config=true' | jq -c '[.account_details[].stream_detail[] | {name, r: .config.num_replicas}]')"

log "NATS: each workload's streams live in its own account (USERS, ORDERS, BILLING)"
jsz=$(curl -sf 'http://localhost:8222/jsz?accounts=true&streams=true') || fail "no /jsz on nats-1"
jq -e '[.account_details[] | {(.name): [.stream_detail[]?.name]}] | add
  | (.USERS | index("USERS_EVENTS")) and (.ORDERS | index("ORDERS_EVENTS")) and (.BILLING | index("BILLING_EVENTS"))
    and ((.TTS // []) | length == 0) and ((."$G" // []) | length == 0)' <<<"$jsz" >/dev/null \
  || fail "streams are not in their workloads' accounts: $(jq -c '[.account_details[] | {(.name): [.stream_detail[]?.name]}] | add' <<<"$jsz")"
