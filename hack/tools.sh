# Sourced by the scripts that run a pinned tool (hack/helm.sh, hack/promtool.sh,
# hack/actionlint.sh, hack/hadolint.sh): install it once into
# ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/tools/, then reuse it.
#
#   tool_init NAME VERSION DIRNAME [BIN]
#       sets tool_dir (tools/DIRNAME) and tool_bin (tool_dir/BIN, default NAME)
#   tool_begin || return
#       in an install function: takes the tool's lock; fails when another run installed it meanwhile
#   tool_end
#       says how long the install took
#   tool_go_install MIN_GO_MINOR HINT PACKAGE [go install flags...]
#       an install function's body for a Go command (MIN_GO_MINOR empty: any go)
#   tool_prepare INSTALL_FUNCTION [--locate|--install]
#       --locate: print the binary's path, or exit 3 when it is not installed;
#       --install: install if needed and print the path; anything else: install if needed

tool_cache="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"

tool_init() {
  tool_name="$1"
  tool_version="$2"
  tool_dir="$tool_cache/tools/$3"
  tool_bin="$tool_dir/${4:-$1}"
}

tool_die() { echo "hack/$tool_name.sh: $*" >&2; exit 1; }

tool_begin() {
  mkdir -p "$tool_dir"
  # One install at a time (parallel test runs, two terminals): the second waits, then reuses it.
  exec 9>"$tool_dir/.lock"
  flock 9
  if [[ -x "$tool_bin" ]]; then return 1; fi
  echo "hack/$tool_name.sh: installing $tool_name $tool_version into $tool_dir (one-off)" >&2
  tool_started=$SECONDS
}

tool_end() {
  echo "hack/$tool_name.sh: installed $tool_name $tool_version in $((SECONDS - tool_started))s" >&2
}

tool_go_install() {
  local min_minor="$1" hint="$2" package="$3"
  shift 3
  command -v go >/dev/null 2>&1 ||
    tool_die "go not found; install Go ${min_minor:+1.$min_minor+ }from https://go.dev/dl/ ($tool_name is built from source)"
  if [[ -n "$min_minor" ]]; then
    local minor
    minor="$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
    [[ -n "$minor" && "$minor" -ge "$min_minor" ]] ||
      tool_die "go $(go env GOVERSION) is too old; $tool_name $tool_version needs go1.$min_minor${hint:+ ($hint)}"
  fi
  tool_begin || return 0
  # Module and build caches shared with the control-plane build (same Kubernetes modules).
  GOBIN="$tool_dir" \
    GOMODCACHE="${GOMODCACHE_OVERRIDE:-$tool_cache/go/mod}" \
    GOCACHE="${GOCACHE_OVERRIDE:-$tool_cache/go/build}" \
    GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath "$@" "$package@$tool_version"
  tool_end
}

tool_prepare() {
  local install="$1"
  case "${2:-}" in
    --locate)
      [[ -x "$tool_bin" ]] || {
        echo "$tool_name $tool_version is not installed; run hack/$tool_name.sh --install" >&2
        exit 3
      }
      echo "$tool_bin"
      exit 0
      ;;
    --install)
      [[ -x "$tool_bin" ]] || "$install"
      echo "$tool_bin"
      exit 0
      ;;
  esac
  [[ -x "$tool_bin" ]] || "$install"
}
