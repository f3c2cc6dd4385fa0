"""Every module of the package has a place in the import-linter layers contract.

``lint-imports`` checks the imports between the modules the contract names; a module it
does not name escapes the check, so a new module must be placed in a layer.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _layered_modules() -> set[str]:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return {name.strip() for layer in layers for name in re.split(r"[:|]", layer)}


def _package_modules() -> set[str]:
    found = set()
    for path in (REPO / "webhook").iterdir():
        if path.suffix == ".py" and path.name != "__init__.py":
            found.add(f"webhook.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists():
            found.add(f"webhook.{path.name}")
    return found


def test_every_module_has_a_layer_and_every_layer_entry_exists() -> None:
    layered, modules = _layered_modules(), _package_modules()
    assert modules - layered == set(), "place these modules in a layer in pyproject.toml"
    assert layered - modules == set(), "these layer entries name no module"
