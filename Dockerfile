# syntax=docker/dockerfile:1
# pull-secret-webhook: `docker build -t pull-secret-webhook:dev .`
#
# The base, pinned by tag and by the digest of its multi-platform index (amd64 and arm64),
# so a rebuild of this file gets the same bytes whatever the tag points at later. A pull by
# digest checks the content against it: a wrong digest fails the build, never swaps the base.
# Docker Hub was not reachable where this was pinned: the digest is the one several public
# projects pin for this tag, and the release workflow's build is the first pull that checks it
# (`skopeo inspect docker://docker.io/library/python:3.11.14-slim-bookworm` shows the current
# one). Fully qualified: buildah does not guess a registry for a short name.
# hack/release-artifacts.sh (BASE_IMAGE=local) and `make image` without Docker pass a base
# made locally instead (devenv/node/image.py).
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Runtime dependencies only, every file checked against the sha256 in requirements.lock
# (hack/lock-requirements.sh). Wheels only: no compiler in the image, no setup.py run.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: --no-deps \
        -r /tmp/requirements.lock

# The application is plain source on PYTHONPATH (no build backend to fetch unhashed),
# compiled here because the running container's root filesystem is read-only.
COPY webhook /app/webhook
RUN python -m compileall -q /app/webhook

# -------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="pull-secret-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that adds registry pull secrets (ACR, ECR, static) to pods" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
# 65532: the conventional "nonroot" uid/gid of distroless images; the manifests'
# runAsUser matches it. Numeric, so runAsNonRoot can be verified by the kubelet.
USER 65532:65532

# 8443: HTTPS /mutate; 8080: /healthz, /readyz, /metrics (plain HTTP).
EXPOSE 8443 8080

ENTRYPOINT ["python", "-m", "webhook"]
CMD ["serve"]
