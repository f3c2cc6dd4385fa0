#!/usr/bin/env bash
# Run a pinned helm, building it once from the Go module proxy when it is not cached.
#
#   hack/helm.sh ARGS...      build helm if needed, then exec `helm ARGS...`
#   hack/helm.sh --install    build helm if needed and print its path
#   hack/helm.sh --locate     print the cached helm's path, or exit 3 when it is not built
#
# No helm binary is published on the registries this project may use (PyPI, npm, Debian,
# the Go module proxy), so it is compiled from its Go module: a one-off of a few minutes
# on 2 cores, then reused from ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/tools/.
set -euo pipefail

# v3.21.4: the newest helm 3 patch release whose go.mod (go 1.26.0, client-go v0.36) builds
# with Go 1.26 and matches the Kubernetes 1.36 control plane the e2e tests run.
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
MIN_GO_MINOR=26

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"
dir="$cache/tools/helm-$HELM_VERSION"
helm="$dir/helm"

die() { echo "hack/helm.sh: $*" >&2; exit 1; }

build() {
  command -v go >/dev/null 2>&1 ||
    die "go not found; install Go 1.$MIN_GO_MINOR+ from https://go.dev/dl/ (helm is built from source)"
  local minor
  minor="$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
  [[ -n "$minor" && "$minor" -ge "$MIN_GO_MINOR" ]] ||
    die "go $(go env GOVERSION) is too old; helm $HELM_VERSION needs go1.$MIN_GO_MINOR (try GOTOOLCHAIN=go1.26.8)"
  mkdir -p "$dir"
  # One build at a time (parallel test runs, two terminals): the second waits, then reuses it.
  exec 9>"$dir/.lock"
  flock 9
  if [[ -x "$helm" ]]; then return; fi
  echo "hack/helm.sh: building helm $HELM_VERSION into $dir (one-off, a few minutes)" >&2
  local started=$SECONDS
  # Module and build caches shared with the control-plane build (same Kubernetes modules).
  GOBIN="$dir" \
    GOMODCACHE="${GOMODCACHE_OVERRIDE:-$cache/go/mod}" \
    GOCACHE="${GOCACHE_OVERRIDE:-$cache/go/build}" \
    GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "hack/helm.sh: built helm $HELM_VERSION in $((SECONDS - started))s" >&2
}

case "${1:-}" in
  --locate)
    [[ -x "$helm" ]] || { echo "helm $HELM_VERSION is not built; run hack/helm.sh --install" >&2; exit 3; }
    echo "$helm"
    ;;
  --install)
    [[ -x "$helm" ]] || build
    echo "$helm"
    ;;
  *)
    [[ -x "$helm" ]] || build
    exec "$helm" "$@"
    ;;
esac
