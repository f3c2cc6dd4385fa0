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
# shellcheck source=hack/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

# v3.21.4: the newest helm 3 patch release whose go.mod (go 1.26.0, client-go v0.36) builds
# with Go 1.26 and matches the Kubernetes 1.36 control plane the e2e tests run.
HELM_VERSION="${HELM_VERSION:-v3.21.4}"

tool_init helm "$HELM_VERSION" "helm-$HELM_VERSION"

build() {
  tool_go_install 26 "try GOTOOLCHAIN=go1.26.8" "helm.sh/helm/v3/cmd/helm" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

tool_prepare build "${1:-}"
exec "$tool_bin" "$@"
