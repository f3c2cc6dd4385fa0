"""One config source: what reads the config takes the ConfigStore and reads ``current`` at
use, so a reload reaches every consumer at once; nothing takes "a Config or a store"."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _annotations(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.arg | ast.AnnAssign) or node.annotation is None:
            continue
        annotation = node.annotation
        text = ast.unparse(annotation)
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            text = annotation.value  # a quoted annotation
        found.append((node.lineno, text))
    return found


def test_no_parameter_or_attribute_takes_a_config_or_a_store() -> None:
    offenders = []
    for path in sorted((REPO / "webhook").rglob("*.py")):
        for line, annotation in _annotations(ast.parse(path.read_text())):
            names = {part.strip() for part in annotation.split("|")}
            if {"Config", "ConfigStore"} <= names:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {annotation}")
    assert offenders == [], "take the ConfigStore; a one-shot caller wraps ConfigStore(config)"
