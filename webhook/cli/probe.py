"""``python -m webhook probe``: prove that a running webhook answers admissions.

It sends one dry-run AdmissionReview, as the API server would, over HTTPS to the webhook's
``/mutate`` URL, trusting only the given CA (the caBundle), and checks the answer: an
``admission.k8s.io/v1`` AdmissionReview that echoes the request's uid and allows the pod.
The chart's ``helm test`` pod runs it against the Service; operators can run it from
anywhere that reaches the webhook.

The probe pod's only image comes from ``probe.invalid`` (".invalid" is reserved and never
resolves, RFC 2606 section 2), so no registry entry matches it, and ``dryRun: true``
forbids side effects anyway (the webhook registers ``sideEffects: NoneOnDryRun``): the
probe never makes a pull secret.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, TextIO

from webhook.admission.reviews import API_VERSION, KIND
from webhook.cli.common import DEFAULT_CERT_DIR, Commands, DefaultsFormatter

#: The image of the probe pod; see the module docstring.
PROBE_IMAGE = "probe.invalid/pull-secret-webhook/probe:1"
#: The API server's own default and maximum wait for a webhook is 10 s and 30 s
#: (MutatingWebhookConfiguration timeoutSeconds); the probe allows as long as the default.
DEFAULT_TIMEOUT_SECONDS = 10.0
#: Answers are small; a bigger body is not an AdmissionReview from this webhook.
MAX_ANSWER_BYTES = 1 << 20


class ProbeError(Exception):
    """The webhook did not answer, or answered something an API server would refuse."""


def probe_review(uid: str, namespace: str) -> dict[str, Any]:
    """A dry-run CREATE of a one-container pod, shaped like the API server's request."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "pull-secret-webhook-probe-", "namespace": namespace},
        "spec": {"containers": [{"name": "probe", "image": PROBE_IMAGE}]},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:probe:pull-secret-webhook-probe"},
            "object": pod,
            "oldObject": None,
            "dryRun": True,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def check_answer(body: bytes, uid: str) -> dict[str, Any]:
    """The response of a valid answer, or ProbeError saying what is wrong with it."""
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise ProbeError(f"the answer is not JSON: {e}") from e
    if not isinstance(answer, dict):
        raise ProbeError("the answer is not a JSON object")
    if (answer.get("apiVersion"), answer.get("kind")) != (API_VERSION, KIND):
        raise ProbeError(
            f"the answer is {answer.get('apiVersion')}/{answer.get('kind')}, "
            f"expected {API_VERSION}/{KIND}"
        )
    response = answer.get("response")
    if not isinstance(response, dict):
        raise ProbeError("the answer has no response")
    if response.get("uid") != uid:
        raise ProbeError(f"the answer's uid {response.get('uid')!r} is not the request's {uid}")
    if response.get("allowed") is not True:
        status = response.get("status") or {}
        raise ProbeError(f"the probe pod was not allowed: {status.get('message', status)}")
    return response


def probe(url: str, ca_file: str, *, namespace: str, timeout: float) -> tuple[str, float]:
    """Send the probe review; return the uid and the round-trip time in seconds."""
    uid = str(uuid.uuid4())
    # Verify the webhook's certificate against the caBundle only, as the API server does.
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(  # noqa: S310 - the URL must be https (checked by main)
        url,
        data=json.dumps(probe_review(uid, namespace)).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as r:  # noqa: S310
            body = r.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise ProbeError(f"HTTP {e.code} {e.reason} from {url}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ProbeError(f"cannot reach {url}: {reason}") from e
    elapsed = time.monotonic() - started
    if len(body) > MAX_ANSWER_BYTES:
        raise ProbeError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    check_answer(body, uid)
    return uid, elapsed


def add_command(sub: Commands) -> None:
    p = sub.add_parser(
        "probe",
        help="send a running webhook a dry-run admission and check its answer",
        description=(
            "POST one dry-run AdmissionReview (a pod whose image no registry entry matches) to "
            "the webhook's /mutate URL over HTTPS, trusting only --ca-file, and check that the "
            "answer echoes the request's uid and allows the pod. `helm test` runs it."
        ),
        formatter_class=DefaultsFormatter,
    )
    p.add_argument(
        "--url",
        default="https://pull-secret-webhook.pull-secret-webhook.svc:443/mutate",
        help="the webhook's /mutate URL, as the API server calls it",
    )
    p.add_argument(
        "--ca-file",
        default=f"{DEFAULT_CERT_DIR}/ca.crt",
        help="the CA to trust (the caBundle; ca.crt of the webhook's TLS Secret)",
    )
    p.add_argument("--namespace", default="default", help="namespace of the probe pod")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="seconds to wait for the answer",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Entry point of ``python -m webhook probe``: 0 answered correctly, 1 not, 2 bad usage."""
    if not args.url.startswith("https://"):
        print(f"error: --url {args.url}: the API server only calls https:// URLs", file=err)
        return 2
    try:
        uid, elapsed = probe(args.url, args.ca_file, namespace=args.namespace, timeout=args.timeout)
    except ProbeError as e:
        print(f"FAIL {args.url}: {e}", file=err)
        return 1
    except (OSError, ssl.SSLError) as e:
        print(f"error: --ca-file {args.ca_file}: {e}", file=err)
        return 2
    print(f"ok   {args.url} allowed dry-run probe {uid} in {elapsed * 1000:.0f} ms", file=out)
    return 0
