#!/usr/bin/env bash
# Write exactly what a release publishes, for one owner and version:
#
#   OWNER=acme VERSION=0.2.0 OUT=dist hack/release-artifacts.sh      (or `make release-artifacts …`)
#
#   OUT/install.yaml                          the kustomize base rendered with this release's image
#                                             (`kubectl apply -f install.yaml`)
#   OUT/pull-secret-webhook-VERSION.tgz       the Helm chart: version and appVersion VERSION, image
#                                             ghcr.io/OWNER/pull-secret-webhook, URLs of REPOSITORY_URL
#   OUT/image/                                the image, an OCI image layout tagged VERSION
#                                             (`skopeo copy --all oci:OUT/image:VERSION docker://…`)
#
# Every image the manifests and the chart name (the webhook, the certificate renewal CronJob,
# the chart's certs Jobs and test pod) becomes ghcr.io/OWNER/pull-secret-webhook:VERSION, and
# the script refuses to finish if any file it wrote still names the repository's placeholder
# owner. The checkout is never modified: the manifests and the chart are rendered from a copy.
#
# Environment:
#   OWNER           GitHub owner publishing the release (lower-cased: OCI names are lower case)
#   VERSION         x.y.z (or x.y.z-pre): the chart's version and appVersion, the image's tag
#   OUT             output directory (created; files of the same name are replaced)
#   REPOSITORY_URL  the source repository (default https://github.com/OWNER/pull-secret-webhook)
#   SKIP_IMAGE=1    leave the image out (a render of the manifests and the chart in seconds)
#   BASE_IMAGE      which base the image is built on:
#                     local  (default) made on this machine with debootstrap and built with
#                            buildah for this machine's platform (devenv/node/image.py; cached:
#                            ~1 min when the sources changed, seconds otherwise);
#                     pinned the Dockerfile's own PYTHON_IMAGE (python:…-slim-bookworm pinned by
#                            digest; needs Docker Hub), built with buildah for PLATFORMS.
#                            The release workflow uses this.
#   PLATFORMS       with BASE_IMAGE=pinned (default linux/amd64,linux/arm64; arm64 RUN steps on an
#                   amd64 machine need qemu-user-static)
#
# Needs: the project's virtualenv (kubectl with kustomize built in; `make venv`), helm
# (hack/helm.sh builds it once), buildah (and debootstrap for BASE_IMAGE=local) unless SKIP_IMAGE=1.
set -euo pipefail

PLACEHOLDER_OWNER=example-org
NAME=pull-secret-webhook
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "hack/release-artifacts.sh: $*" >&2; exit 1; }

[[ -n "${OWNER:-}" ]] || die "OWNER is required (the GitHub owner publishing the release, e.g. OWNER=acme)"
[[ -n "${VERSION:-}" ]] || die "VERSION is required (x.y.z, e.g. VERSION=0.2.0)"
[[ -n "${OUT:-}" ]] || die "OUT is required (the directory to write the artifacts to)"
owner="${OWNER,,}"
# GitHub owner names: letters, digits and single hyphens, not at either end, at most 39.
[[ "$owner" =~ ^[a-z0-9]([a-z0-9]|-[a-z0-9]){0,38}$ ]] ||
  die "OWNER '$OWNER' is not a GitHub owner name (letters, digits, inner single hyphens)"
[[ "$owner" != "$PLACEHOLDER_OWNER" ]] ||
  die "OWNER $PLACEHOLDER_OWNER is the repository's placeholder, not a publisher"
# Semantic versioning 2.0 (a pre-release suffix allowed): Helm refuses anything else.
[[ "$VERSION" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION '$VERSION' is not x.y.z (semantic versioning, without a leading v)"
base="${BASE_IMAGE:-local}"
[[ "$base" == local || "$base" == pinned ]] || die "BASE_IMAGE must be local or pinned, not '$base'"

image="ghcr.io/$owner/$NAME"
placeholder_image="ghcr.io/$PLACEHOLDER_OWNER/$NAME"
repository_url="${REPOSITORY_URL:-https://github.com/$owner/$NAME}"
kubectl="$root/.venv/bin/kubectl"
python="$root/.venv/bin/python"
[[ -x "$kubectl" && -x "$python" ]] || die "$root/.venv is missing: run \`make venv\` first"
helm="$(bash "$root/hack/helm.sh" --install)"

mkdir -p "$OUT"
out="$(cd "$OUT" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- a copy of what is rendered: the checkout stays as it is ----------------------------
cp -r "$root/manifests" "$work/manifests"
cp -r "$root/charts/$NAME" "$work/chart"
rm -rf "$work/chart/charts" "$work/chart/tmpcharts"

# --- install.yaml: the kustomize base with this release's image -------------------------
# kustomize's image transformer rewrites every container of every workload (the Deployment
# and the renewal CronJob's job template alike), where a text substitution would have to
# know each file that names the image.
mkdir "$work/release"
cat > "$work/release/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../manifests
images:
  - name: $placeholder_image
    newName: $image
    newTag: "$VERSION"
EOF
{
  echo "# $NAME $VERSION: kubectl apply -f install.yaml ($repository_url)"
  "$kubectl" kustomize "$work/release"
} > "$out/install.yaml.tmp"
mv "$out/install.yaml.tmp" "$out/install.yaml"

# --- the chart: the image, the version and the repository's URLs ------------------------
chart="$work/chart"
sed -i -E "s|^(  repository: )$placeholder_image\$|\1$image|" "$chart/values.yaml"
grep -qE "^  repository: $image\$" "$chart/values.yaml" ||
  die "could not set image.repository in $chart/values.yaml"
# The owner's names in the chart's comments, notes and README too (the image, the chart's own
# OCI repository), then the repository's URLs.
grep -rlZ -e "ghcr.io/$PLACEHOLDER_OWNER/" -e "https://github.com/$PLACEHOLDER_OWNER/$NAME" "$chart" |
  xargs -0 -r sed -i -e "s|ghcr.io/$PLACEHOLDER_OWNER/|ghcr.io/$owner/|g" \
    -e "s|https://github.com/$PLACEHOLDER_OWNER/$NAME|$repository_url|g"
"$helm" lint --strict "$chart" >/dev/null
rm -f "$out/$NAME-$VERSION.tgz"
"$helm" package "$chart" --version "$VERSION" --app-version "$VERSION" --destination "$out" >/dev/null
[[ -f "$out/$NAME-$VERSION.tgz" ]] || die "helm package wrote no $out/$NAME-$VERSION.tgz"

# --- what was written names only this owner's image ------------------------------------
mkdir "$work/unpacked"
tar -xzf "$out/$NAME-$VERSION.tgz" -C "$work/unpacked"
if grep -rl "$PLACEHOLDER_OWNER" "$out/install.yaml" "$work/unpacked"; then
  die "the files above still name the placeholder owner $PLACEHOLDER_OWNER"
fi
"$helm" template "$NAME" "$out/$NAME-$VERSION.tgz" --namespace "$NAME" --kube-version 1.36.3 \
  > "$work/chart-rendered.yaml"
bad="$(cat "$out/install.yaml" "$work/chart-rendered.yaml" |
  sed -nE 's/^ *(- )?image: *"?([^"]*)"?$/\2/p' | grep -v "^$image:$VERSION\$" || true)"
[[ -z "$bad" ]] || die "images other than $image:$VERSION: $bad"

# --- the image ---------------------------------------------------------------------------
if [[ "${SKIP_IMAGE:-}" == 1 ]]; then
  echo "hack/release-artifacts.sh: SKIP_IMAGE=1: no image" >&2
else
  rm -rf "$out/image"
  labels=(
    "org.opencontainers.image.version=$VERSION"
    "org.opencontainers.image.source=$repository_url"
  )
  if [[ "$base" == pinned ]]; then
    platforms="${PLATFORMS:-linux/amd64,linux/arm64}"
    list="localhost/$NAME-release:$VERSION"
    buildah manifest rm "$list" >/dev/null 2>&1 || true
    label_args=()
    for label in "${labels[@]}"; do label_args+=("--label=$label"); done
    buildah bud --platform="$platforms" --manifest="$list" --layers=false \
      "${label_args[@]}" --file="$root/Dockerfile" "$root"
    buildah manifest push --all "$list" "oci:$out/image:$VERSION"
    buildah manifest rm "$list" >/dev/null
  else
    (cd "$root" && "$python" -m devenv.node image \
      --oci-layout "$out/image" --tag "$VERSION" --label "${labels[0]}" --label "${labels[1]}")
  fi
  if grep -rqa "$PLACEHOLDER_OWNER" "$out/image"; then
    die "the image in $out/image names the placeholder owner $PLACEHOLDER_OWNER"
  fi
fi

echo "hack/release-artifacts.sh: $image:$VERSION -> $out" >&2
ls -1 "$out" >&2
