"""The pinned promtool, for the alert rules' tests (built by hack/promtool.sh, `make tools`)."""

from __future__ import annotations

from pathlib import Path

from tests.support.manifests import pinned_tool


def promtool_binary() -> Path:
    """The pinned promtool that hack/promtool.sh builds."""
    return pinned_tool("promtool")
