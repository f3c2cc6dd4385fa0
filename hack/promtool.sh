#!/usr/bin/env bash
# Run a pinned promtool, building it once from the Go module proxy when it is not cached.
#
#   hack/promtool.sh ARGS...      build promtool if needed, then exec `promtool ARGS...`
#   hack/promtool.sh --install    build promtool if needed and print its path
#   hack/promtool.sh --locate     print the cached promtool's path, or exit 3 when it is not built
#
# promtool checks the shipped alerting rules and evaluates them in the tests (`promtool test
# rules`). No promtool binary is published on the registries this project may use, so it is
# compiled from Prometheus's Go module (cmd/promtool) and reused from
# ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/tools/.
set -euo pipefail

# v0.316.0 is Prometheus v3.16.0 (Prometheus publishes its Go module as v0.3MM.P for
# v3.MM.P); its go.mod asks for go 1.26.7 and has no replace directives, so `go install`
# builds it as published.
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
# Without Prometheus's service-discovery plugins (AWS, Azure, GCE, ... SDKs): checking and
# evaluating rules needs none. Measured on 2 shared cores (load ~11), from an empty build
# cache: 953 s with the tag, 1117 s without; the binary is 54 MB instead of 88 MB.
PROMTOOL_TAGS="remove_all_sd"
MIN_GO_MINOR=26

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"
dir="$cache/tools/promtool-$PROMTOOL_VERSION-$PROMTOOL_TAGS"
promtool="$dir/promtool"

die() { echo "hack/promtool.sh: $*" >&2; exit 1; }

build() {
  command -v go >/dev/null 2>&1 ||
    die "go not found; install Go 1.$MIN_GO_MINOR+ from https://go.dev/dl/ (promtool is built from source)"
  local minor
  minor="$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
  [[ -n "$minor" && "$minor" -ge "$MIN_GO_MINOR" ]] ||
    die "go $(go env GOVERSION) is too old; promtool $PROMTOOL_VERSION needs go1.$MIN_GO_MINOR"
  mkdir -p "$dir"
  # One build at a time (parallel test runs, two terminals): the second waits, then reuses it.
  exec 9>"$dir/.lock"
  flock 9
  if [[ -x "$promtool" ]]; then return; fi
  echo "hack/promtool.sh: building promtool $PROMTOOL_VERSION into $dir (one-off, a few minutes)" >&2
  local started=$SECONDS
  GOBIN="$dir" \
    GOMODCACHE="${GOMODCACHE_OVERRIDE:-$cache/go/mod}" \
    GOCACHE="${GOCACHE_OVERRIDE:-$cache/go/build}" \
    GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath -tags "$PROMTOOL_TAGS" -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  echo "hack/promtool.sh: built promtool $PROMTOOL_VERSION in $((SECONDS - started))s" >&2
}

case "${1:-}" in
  --locate)
    [[ -x "$promtool" ]] || { echo "promtool $PROMTOOL_VERSION is not built; run hack/promtool.sh --install" >&2; exit 3; }
    echo "$promtool"
    ;;
  --install)
    [[ -x "$promtool" ]] || build
    echo "$promtool"
    ;;
  *)
    [[ -x "$promtool" ]] || build
    exec "$promtool" "$@"
    ;;
esac
