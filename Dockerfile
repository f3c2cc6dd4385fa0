# syntax=docker/dockerfile:1
# pull-secret-webhook: `docker build -t pull-secret-webhook:dev .`
#
# The base is pinned by tag only. Pin it by digest as well in a release pipeline
# (FROM python:3.11.14-slim-bookworm@sha256:...): the digest could not be resolved where this
# file was written (no access to the image registry), and a guessed one would break builds.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

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
