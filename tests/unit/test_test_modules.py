"""A test module is never imported by another: what tests share lives in tests/support/
(or devenv/support/, for what benchmarks and the local environment use too).

A test module used as a library runs its own tests again wherever it is imported with
``from ... import *``, drags its fixtures into other modules unasked, and cannot be
renamed or split without breaking modules that only wanted a helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _is_module(name: str) -> bool:
    return (REPO / (name.replace(".", "/") + ".py")).is_file()


def _is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def modules_imported_by(source: str) -> list[str]:
    """The test modules ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_test_module(node.module):
                found.append(node.module)
            else:  # from tests.unit import test_x (a module, not a fixture named test_x)
                found += [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if _is_test_module(a.name) and _is_module(f"{node.module}.{a.name}")
                ]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_test_module(a.name)]
    return found


def test_no_module_imports_a_test_module() -> None:
    offenders = []
    for top in ("tests", "devenv", "bench", "webhook"):
        for path in sorted((REPO / top).rglob("*.py")):
            for module in modules_imported_by(path.read_text()):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert offenders == [], "move what is shared to tests/support/ and import it from there"


def test_the_scan_sees_each_way_of_importing_a_test_module() -> None:
    source = (
        "from tests.unit.test_a import helper\n"
        "from tests.unit import test_layers\n"
        "import tests.e2e.test_c\n"
        "from tests.support.manifests import kustomize\n"
        "from devenv.peers.fixtures import test_ca\n"  # a fixture, not a module
    )
    assert modules_imported_by(source) == [
        "tests.unit.test_a",
        "tests.unit.test_layers",
        "tests.e2e.test_c",
    ]
