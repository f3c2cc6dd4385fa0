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
# shellcheck source=hack/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

# v1.7.12: the newest release on the Go module proxy when this was pinned.
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"

tool_init actionlint "$ACTIONLINT_VERSION" "actionlint-$ACTIONLINT_VERSION"

build() {
  tool_go_install "" "" "github.com/rhysd/actionlint/cmd/actionlint" -ldflags "-s -w"
}

tool_prepare build "${1:-}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "$tool_bin" "$@"
