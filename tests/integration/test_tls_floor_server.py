"""bench/tlsfloor.go, the storm benchmark's lower bound, answers an AdmissionReview as the
webhook would (its uid and apiVersion echoed, allowed, the fixed JSONPatch in base64)
over TLS with the stack's kind of serving certificate, and refuses what is not one."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench import tlsfloor
from webhook.certs.pki import make_ca, make_serving_cert


@pytest.mark.timeout(600)  # the first build compiles it (the standard library only)
def test_the_go_floor_answers_a_review_with_its_fixed_patch(tmp_path: Path) -> None:
    ca = make_ca()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(cert, key)
    patch = tlsfloor.fixed_patch(["psw-a", "psw-b"])
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "4d1c-77", "namespace": "team-a", "object": {"kind": "Pod"}},
    }
    with tlsfloor.serving(cert, key, patch, tmp_path) as server:
        url = f"https://127.0.0.1:{server.port}/mutate"
        request = urllib.request.Request(
            url, json.dumps(review).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as r:  # noqa: S310
            answer = json.loads(r.read())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(url, b"{}", {"Content-Type": "application/json"}),
                context=context,
                timeout=10,
            )
        refused.value.close()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == "4d1c-77"
    assert answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["response"]["patch"])) == [
        {
            "op": "add",
            "path": "/spec/imagePullSecrets",
            "value": [{"name": "psw-a"}, {"name": "psw-b"}],
        }
    ]
    assert refused.value.code == 400
