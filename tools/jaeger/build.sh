#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one) from its Go module, pinned as a tool in tools/jaeger/go.mod,
# into bin/jaeger: a static binary that `make run TRACING=1` runs and deploy/jaeger/Dockerfile
# copies. tools/jaeger is its own module outside go.work (GOWORK=off), so Jaeger's dependency
# graph never moves the versions the workspace's modules share.
#
# The build takes minutes on two cores, so it is cached: bin/jaeger.sum records the hash of the
# go.mod and go.sum it was built from, and only a change of those builds again. Concurrent
# callers wait for one build (flock). Prints the binary's path.
#
# Usage: tools/jaeger/build.sh [OUT]     (OUT defaults to <repo>/bin/jaeger)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/bin/jaeger}
mkdir -p "$(dirname "$out")"
want=$(cat "$root/tools/jaeger/go.mod" "$root/tools/jaeger/go.sum" | sha256sum | cut -d' ' -f1)
cached() { [ -x "$out" ] && [ "$(cat "$out.sum" 2>/dev/null)" = "$want" ]; }

exec 9>"$out.lock"
flock 9
if ! cached; then
  echo "building Jaeger from tools/jaeger/go.mod into $out (minutes; cached afterwards)" >&2
  started=$SECONDS
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  (cd "$root/tools/jaeger" && GOWORK=off CGO_ENABLED=0 "${GO:-go}" build -trimpath -ldflags='-s -w' \
    -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv -f "$tmp" "$out"
  echo "$want" >"$out.sum"
  echo "Jaeger built in $((SECONDS - started)) s" >&2
fi
echo "$out"
