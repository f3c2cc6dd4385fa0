"""A failed Kubernetes call is a class chosen once from its status; nobody else reads the
number.

The scan below fails when code outside the Kubernetes client compares an HTTP status with
a number (``e.status == 409``, ``status in (404, 409)``, ``code == "403"``): callers catch
``ConflictError``, ``NotFoundError``... instead.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from webhook.kube.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    UnreachableError,
    for_status,
)
from webhook.kube.objects import KubeAPIError

REPO = Path(__file__).resolve().parents[2]

#: Where a status may be read as a number, and why.
READS_STATUSES = {
    # The Kubernetes client: it chooses the class from the status, once.
    "webhook/kube/errors.py": "chooses the error class from the status",
    "webhook/kube/client.py": "turns an answer into success or an ApiError",
    # Other services' HTTP answers, classified by the client of that service where it
    # reads them (a registry's token endpoint, Entra ID, AWS): not the Kubernetes API.
    "webhook/credentials/acr.py": "the ACR token exchange's own answer",
    "webhook/credentials/entra.py": "Entra ID's own answer",
    "webhook/credentials/ecr_errors.py": "AWS's own answer",
    "webhook/credentials/gar.py": "Google's and the Artifact Registry host's own answers",
    # The webhook's own answer to a malformed review (400, 405, 429), not a call's.
    "webhook/admission/reviews.py": "the status the webhook itself answers a bad review with",
}

#: Names under which a status travels.
STATUS_NAMES = {"status", "code", "status_code"}


def _is_status(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in STATUS_NAMES
    return isinstance(node, ast.Name) and node.id in STATUS_NAMES


def _is_http_number(node: ast.expr) -> bool:
    """An HTTP status written out: 100 to 599, as a number or its digits in a string,
    alone or in a tuple/list/set."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_http_number(e) for e in node.elts)
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return False
    value = node.value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return isinstance(value, int) and 100 <= value <= 599


def status_comparisons(source: str) -> list[int]:
    """Lines of ``source`` comparing a status with an HTTP status number."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(_is_status(o) for o in operands) and any(_is_http_number(o) for o in operands):
            found.append(node.lineno)
    return found


def test_no_status_is_compared_with_a_number_outside_the_client() -> None:
    offenders = []
    for path in sorted((REPO / "webhook").rglob("*.py")):
        where = str(path.relative_to(REPO))
        if where in READS_STATUSES:
            continue
        offenders += [f"{where}:{line}" for line in status_comparisons(path.read_text())]
    assert offenders == [], "catch the ApiError subclass (webhook.kube.errors) instead"


@pytest.mark.parametrize(
    "source",
    [
        "if e.status == 409: pass",
        "if e.status not in (404, 409): pass",
        "ok = 200 <= resp.status < 300",
        'hint = "grant" if code == "403" else ""',
        "if status != 410: pass",
    ],
    ids=["equals", "not-in-tuple", "range", "digits-as-text", "bare-name"],
)
def test_the_scan_finds_each_way_of_comparing_a_status(source: str) -> None:
    assert status_comparisons(source) == [1]


def test_the_scan_leaves_other_comparisons_alone() -> None:
    source = "if len(items) > 200: pass\nif status.state == 'ready': pass\nif e.status: pass\n"
    assert status_comparisons(source) == []


def test_every_listed_reader_of_statuses_exists() -> None:
    assert [p for p in READS_STATUSES if not (REPO / p).is_file()] == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (0, UnreachableError),
        (400, BadRequestError),
        (401, UnauthorizedError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (410, GoneError),
        (422, InvalidError),
        (429, TooManyRequestsError),
        (500, ServerError),
        (503, ServerError),
        (418, ApiError),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else v.__name__,
)
def test_an_error_built_from_a_status_is_of_the_class_the_status_names(
    status: int, cls: type[ApiError]
) -> None:
    error = ApiError(status, "Reason", "what the API server said")
    assert type(error) is cls and for_status(status) is cls
    assert (error.status, error.reason, error.message) == (
        status,
        "Reason",
        "what the API server said",
    )
    # The name callers knew before keeps building the same classes.
    assert type(KubeAPIError(status, "Reason")) is cls


@pytest.mark.parametrize(
    ("status", "transient", "unavailable"),
    [
        (0, True, True),
        (403, False, False),
        (404, False, False),
        (409, False, False),
        (429, True, False),
        (500, True, False),
        (502, True, True),
        (503, True, True),
        (504, True, True),
    ],
)
def test_retrying_and_reachability_follow_from_the_class(
    status: int, transient: bool, unavailable: bool
) -> None:
    error = ApiError(status, "")
    assert (error.transient, error.unavailable) == (transient, unavailable)


def test_a_subclass_built_directly_keeps_its_class_and_a_long_body_is_cut() -> None:
    error = ConflictError(409, "Conflict", "x" * 1000 + " tail")
    assert type(error) is ConflictError
    assert len(error.message) == 300 and "tail" not in str(error)


def test_an_error_copies_with_its_class_and_fields() -> None:
    """Copying (and pickling) rebuilds an exception from its reduce tuple."""
    error = ApiError(404, "NotFound", 'secrets "psw-a" not found')
    again = copy.deepcopy(error)
    assert type(again) is NotFoundError
    assert (again.status, again.reason, again.message, str(again)) == (
        404,
        "NotFound",
        error.message,
        str(error),
    )


def test_no_answer_is_reported_by_what_went_wrong() -> None:
    assert ApiError(0, "ClientConnectorError").code == "ClientConnectorError"
    assert ApiError(0, "").code == "unreachable"
    assert ApiError(403, "Forbidden").code == "403"
