"""The pinned promtool, for the alert rules' tests (built by hack/promtool.sh, `make tools`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.manifests import REPO, TOOL_TIMEOUT_SECONDS, missing_tool

PROMTOOL_SCRIPT = REPO / "hack" / "promtool.sh"


def promtool_binary() -> Path:
    """The pinned promtool that hack/promtool.sh builds (`make tools`); never built from a
    test (minutes). Missing: skipped, and a failure under CI=true."""
    located = subprocess.run(
        ["bash", str(PROMTOOL_SCRIPT), "--locate"],
        capture_output=True,
        text=True,
        check=False,
        timeout=TOOL_TIMEOUT_SECONDS,
    )
    if located.returncode != 0:
        missing_tool(
            "promtool is not built: run `hack/promtool.sh --install` (or `make tools`) first; "
            + located.stderr.strip()
        )
    return Path(located.stdout.strip())
