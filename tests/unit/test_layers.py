"""Every package of the webhook has a place in the import-linter layers contract and in
the architecture's map.

``lint-imports`` checks the imports between the packages the contract names; a package it
does not name escapes the check, so a new package must be placed in a layer, and
docs/architecture.md must say what it does.
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


def _documented_packages() -> set[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Packages by role", 1)[1].split("\n## ", 1)[0]
    found = set()
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)  # a table row; "\|" is a pipe inside a cell
        if len(cells) > 3:
            found |= {f"webhook.{name}" for name in re.findall(r"`(\w+)/`", cells[2])}
    return found


def test_every_package_is_in_the_architecture_map_and_every_map_entry_exists() -> None:
    packages = {name for name in _package_modules() if name != "webhook.__main__"}
    documented = _documented_packages()
    assert packages - documented == set(), "describe these packages in docs/architecture.md"
    assert documented - packages == set(), "docs/architecture.md names packages that do not exist"
