#!/usr/bin/env bash
# Run a pinned actionlint over .github/workflows, building it once from its Go module.
#
#   hack/actionlint.sh [ARGS...]  build actionlint if needed, then run it (default: every workflow)
#   hack/actionlint.sh --install  build actionlint if needed and print its path
#
# The release workflow cannot run here (it needs GitHub's runners and OIDC token), so
# `make lint` checks it statically: actionlint validates the workflow syntax, expressions,
# action inputs it knows, and the shell of every `run:` step with shellcheck when one is on
# PATH. Built like hack/helm.sh: `go install` from the Go module proxy into
# ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/tools/, once (66 s cold on a loaded 2-core
# machine, peak RSS 0.3 GB), then reused.
set -euo pipefail

# v1.7.12: the newest release on the Go module proxy when this was pinned.
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"
dir="$cache/tools/actionlint-$ACTIONLINT_VERSION"
bin="$dir/actionlint"

die() { echo "hack/actionlint.sh: $*" >&2; exit 1; }

build() {
  command -v go >/dev/null 2>&1 ||
    die "go not found; install Go from https://go.dev/dl/ (actionlint is built from source)"
  mkdir -p "$dir"
  # One build at a time; a concurrent caller waits, then reuses the binary.
  exec 9>"$dir/.lock"
  flock 9
  if [[ -x "$bin" ]]; then return; fi
  echo "hack/actionlint.sh: building actionlint $ACTIONLINT_VERSION into $dir (one-off)" >&2
  GOBIN="$dir" \
    GOMODCACHE="${GOMODCACHE_OVERRIDE:-$cache/go/mod}" \
    GOCACHE="${GOCACHE_OVERRIDE:-$cache/go/build}" \
    GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}

case "${1:-}" in
  --install)
    [[ -x "$bin" ]] || build
    echo "$bin"
    ;;
  *)
    [[ -x "$bin" ]] || build
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$root"
    exec "$bin" "$@"
    ;;
esac
