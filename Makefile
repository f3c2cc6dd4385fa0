# pull-secret-webhook — developer entry points.
# `make run` starts a local playground; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit e2e venv system-deps controlplane clean bench kind-e2e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use as real peers: an OCI registry and an OCI client.
system-deps:
	@bash hack/install-system-deps.sh

# kube-apiserver, kube-controller-manager (built once from the Go module proxy, cached
# outside the repo), etcd and kubectl.
controlplane: $(STAMP)
	$(PY) -m tests.e2e.controlplane build

lint: $(STAMP)
	$(VENV)/bin/ruff check webhook tests bench
	$(VENV)/bin/ruff format --check webhook tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

test: $(STAMP) system-deps controlplane lint typecheck
	$(VENV)/bin/pytest

run: $(STAMP) system-deps controlplane
	$(PY) -m tests.e2e.playground $(ARGS)

bench: $(STAMP)
	$(PY) -m bench.admission

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
