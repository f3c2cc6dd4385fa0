"""What `python -m webhook probe` accepts as a webhook's answer: exactly what the API server
would (an admission.k8s.io/v1 AdmissionReview echoing the uid, allowing the pod)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webhook.admission.reviews import decode_review
from webhook.cli.probe import PROBE_IMAGE, ProbeError, check_answer, probe_review

UID = "3f1c6f2e-0d6e-4c1b-9f7a-2f4b9a1d8c55"


def answer(**response: Any) -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": UID, "allowed": True, **response},
    }
    return json.dumps(body).encode()


def test_the_probe_review_is_a_valid_dry_run_pod_creation() -> None:
    review = probe_review(UID, "platform")

    api_version, request = decode_review(json.dumps(review).encode())

    assert api_version == "admission.k8s.io/v1"
    assert (request["uid"], request["operation"], request["dryRun"]) == (UID, "CREATE", True)
    pod = request["object"]
    assert pod is not None
    assert pod["spec"]["containers"][0]["image"] == PROBE_IMAGE
    # .invalid never resolves (RFC 2606), so no registry entry can match it.
    assert PROBE_IMAGE.split("/")[0].endswith(".invalid")


def test_an_allowing_answer_with_the_uid_passes() -> None:
    assert check_answer(answer(), UID)["allowed"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"<html>", "not JSON", id="html"),
        pytest.param(b"[]", "not a JSON object", id="list"),
        pytest.param(
            json.dumps({"apiVersion": "v1", "kind": "Status"}).encode(),
            "expected admission.k8s.io/v1/AdmissionReview",
            id="status",
        ),
        pytest.param(
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "no response",
            id="no-response",
        ),
        pytest.param(answer(uid="other"), "is not the request's", id="uid"),
        pytest.param(
            answer(allowed=False, status={"message": "denied by policy"}),
            "not allowed: denied by policy",
            id="denied",
        ),
    ],
)
def test_an_answer_the_api_server_would_refuse_fails(body: bytes, message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        check_answer(body, UID)
