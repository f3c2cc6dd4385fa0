"""bench/tlsfloor.go, the storm benchmark's lower bound, answers an AdmissionReview as the
webhook would (its uid and apiVersion echoed, allowed, the fixed JSONPatch in base64)
over TLS with the stack's kind of serving certificate, and refuses what is not one."""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


@pytest.mark.timeout(600)
def test_the_cold_floor_makes_each_namespaces_secrets_once_before_it_answers(
    tmp_path: Path,
) -> None:
    """With ``-apiserver`` the floor makes the patch's Secrets in a namespace on its first
    review (one POST each, with the token given), and every review of that namespace,
    however many arrive at once, is answered after them without a write of its own."""
    ca = make_ca()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(cert, key)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "token").write_text("floor-token\n")
    posts: list[tuple[str, str, Any]] = []
    lock = threading.Lock()

    class ApiServer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(0.2)  # a write's round trip: reviews arriving meanwhile wait
            with lock:
                posts.append((self.path, self.headers["Authorization"], body))
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ApiServer)
    serving_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving_context.load_cert_chain(cert, key)
    api.socket = serving_context.wrap_socket(api.socket, server_side=True)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    making = tlsfloor.SecretMaking(
        f"https://127.0.0.1:{api.server_address[1]}",
        tmp_path / "ca.crt",
        tmp_path / "token",
        ("psw-a", "psw-b"),
    )
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def admit(namespace: str, uid: str) -> Any:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "namespace": namespace, "object": {"kind": "Pod"}},
        }
        request = urllib.request.Request(
            url, json.dumps(review).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as r:  # noqa: S310
            answer = json.loads(r.read())
        with lock:
            made = sum(f"/namespaces/{namespace}/" in path for path, _, _ in posts)
        return {**answer, "made_before": made}

    try:
        patch = tlsfloor.fixed_patch(["psw-a", "psw-b"])
        with tlsfloor.serving(cert, key, patch, tmp_path, making) as server:
            url = f"https://127.0.0.1:{server.port}/mutate"
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                answers = list(
                    pool.map(admit, ["team-a"] * 5 + ["team-b"], [str(i) for i in range(6)])
                )
            created = tlsfloor.secrets_created(server)
    finally:
        api.shutdown()
        api.server_close()
    assert sorted(p for p, _, _ in posts) == [
        "/api/v1/namespaces/team-a/secrets",
        "/api/v1/namespaces/team-a/secrets",
        "/api/v1/namespaces/team-b/secrets",
        "/api/v1/namespaces/team-b/secrets",
    ]
    assert {auth for _, auth, _ in posts} == {"Bearer floor-token"}
    assert created == 4  # each answered 201, and counted for the benchmark's check
    for _, _, body in posts:
        assert body["type"] == "kubernetes.io/dockerconfigjson"
        assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "pull-secret-webhook"}
    assert sorted(body["metadata"]["name"] for _, _, body in posts) == [
        "psw-a",
        "psw-a",
        "psw-b",
        "psw-b",
    ]
    # Every answer came after its namespace's two Secrets were made.
    assert [a["made_before"] for a in answers] == [2] * 6
    assert all(a["response"]["allowed"] is True for a in answers)
