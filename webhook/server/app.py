"""HTTP: ``POST /mutate`` over TLS; ``/healthz``, ``/readyz``, ``/metrics`` on a plain port.

Transport hardening follows controller-runtime's webhook ``http.go``: a body
size limit, a content-type check, JSON errors answered with HTTP 400 whose body
is still an AdmissionReview, and the request's uid and apiVersion echoed on
every path.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from webhook.admission import decision as admission
from webhook.admission import jsonio
from webhook.admission.decision import Outcome, Plan, SecretSource, Skip
from webhook.admission.needs import PullNeed
from webhook.admission.reviews import (
    MAX_VALUES,
    AdmissionRequest,
    BadReview,
    bad_request,
    clip,
    decode_review,
    decoded_string_bytes,
    quote,
    review,
    scan_body,
)
from webhook.admission.verdicts import Denied, Verdict, encode, failed, left_alone
from webhook.config.store import ConfigStore
from webhook.server.budget import Budget, BudgetExhausted, Held
from webhook.server.connections import (
    HANDSHAKE_TIMEOUT,
    HEADER_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_HANDSHAKING,
    ConnectionGuard,
    GatedTLSSite,
    limit_tls_read_buffer,
)
from webhook.server.tlsreload import ReloadingTLS
from webhook.telemetry.logs import log_context
from webhook.telemetry.metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger(__name__)

#: The API server stores objects of at most ~1.5 MiB (etcd's request limit) and accepts
#: request bodies of 3 MiB; a review carries object and oldObject. controller-runtime
#: sizes its limit the same way: 2 x 3 MiB plus room for the review envelope.
MAX_BODY_BYTES = 7 * 1024 * 1024
#: A client that has not sent its whole body after this long is dropped (slow-client guard).
BODY_READ_TIMEOUT = 10.0
#: After refusing a body early, aiohttp reads and drops what the client still sends so the
#: client sees the 400 instead of a reset. Its 10 s default is long for a 7 MiB limit.
LINGERING_SECONDS = 2.0
#: What requests in flight may hold at once: bodies being read plus their decoded reviews
#: (estimated at BYTES_PER_VALUE per JSON value). A maximal review (7 MiB, MAX_VALUES
#: values) takes ~38 MiB of it; a typical pod review ~50 KiB. Sized so that, with
#: MAX_CONNECTIONS open, a replica stays well inside the Deployment's 256Mi limit.
MEMORY_BUDGET_BYTES = 64 * 1024 * 1024
#: Measured: a decoded review costs ~110 bytes per value (dicts, lists, small strings).
BYTES_PER_VALUE = 128
#: A request waits at most this long for budget before a 429 (the API server's whole
#: call is bounded by timeoutSeconds, 10 s by default).
BUDGET_WAIT = 2.0
#: A review at least this large asks for freed memory to be returned once it is answered.
LARGE_REVIEW_BYTES = 4 * 1024 * 1024
#: Error messages written to the log are cut to this many characters.
LOGGED_MESSAGE_MAX = 300
#: In-flight admissions get this long to finish after SIGTERM (below the pod's default
#: 30 s terminationGracePeriodSeconds, leaving room for the process to exit).
SHUTDOWN_TIMEOUT = 20.0

#: The config in use: reloaded from its file without a restart (webhook.config.watch).
CONFIG: web.AppKey[ConfigStore] = web.AppKey("config", ConfigStore)
SOURCE: web.AppKey[SecretSource] = web.AppKey("source")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STATE: web.AppKey[ServerState] = web.AppKey("state")
BUDGET: web.AppKey[Budget] = web.AppKey("budget", Budget)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)


@dataclass
class ServerState:
    """Liveness/readiness inputs shared by the two apps."""

    ready_checks: list[Callable[[], str | None]] = field(default_factory=list)
    """Each returns None when fine, or why the replica is not ready."""
    shutting_down: bool = False

    def not_ready_reasons(self) -> list[str]:
        reasons = ["shutting down"] if self.shutting_down else []
        for check in self.ready_checks:
            why = check()
            if why:
                reasons.append(why)
        return reasons


class NamesOnlySource:
    """A SecretSource that makes no secrets: every needed name counts as ready.

    Used for ``serve --names-only`` (patch preview without Kubernetes access) and for
    transport tests. It does not put a secret in the cluster.
    """

    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome:
        return admission.ALL_READY


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=jsonio.dumps(doc), content_type="application/json")


async def _read_body(request: web.Request, held: Held) -> bytes | bytearray:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadReview(
            f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes"
        )
    if length == 0:
        return b""
    if length is not None:
        # The API server always sends Content-Length: read it in one go. A review of a
        # few KB has usually arrived with the headers; only the rest is waited for.
        head = request.content.read_nowait(length)
        if len(head) == length:
            if not held.take_now(length):
                await held.take(length, BUDGET_WAIT)
            return head
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            await held.take(length, BUDGET_WAIT)  # before the rest is buffered
            # Into one buffer of the announced size, as it arrives: readexactly would keep
            # the chunks and their join (and head + rest a third copy), three times what
            # the budget counts for a 7 MiB body.
            body = bytearray(length)
            view = memoryview(body)
            got = len(head)
            view[:got] = head
            while got < length:
                chunk = await request.content.readany()
                if not chunk:
                    raise BadReview(f"request body ended after {got} of {length} bytes")
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
            view.release()
            return body
    # Grown in place (a join of the chunks would hold the body twice); a bytearray keeps
    # at most an eighth more than it holds.
    body = bytearray()
    async with asyncio.timeout(BODY_READ_TIMEOUT):
        async for chunk in request.content.iter_chunked(64 * 1024):
            if len(body) + len(chunk) > MAX_BODY_BYTES:
                raise BadReview(f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
            await held.take(len(chunk), BUDGET_WAIT)  # chunked: pay as it arrives
            body += chunk
    return body


async def _read_review(request: web.Request, held: Held) -> tuple[str, AdmissionRequest]:
    if request.method != "POST":
        raise BadReview(
            f"method {clip(request.method)} is not allowed; POST an AdmissionReview", status=405
        )
    headers = request.headers
    ctype = headers.get("Content-Type", "")
    # As the API server sends it first; then with parameters, spaces or capitals.
    if ctype != "application/json" and ctype.split(";")[0].strip().lower() != "application/json":
        raise BadReview(f"Content-Type is {quote(ctype)}, expected application/json")
    encoding = headers.get("Content-Encoding")  # the API server sends none
    if encoding is not None and (encoding := encoding.strip().lower()) != "identity":
        # The API server never compresses webhook requests, and a compressed body could
        # expand a thousandfold past the size limit before it is counted.
        raise BadReview(f"Content-Encoding {quote(encoding)} is not accepted; send plain JSON")
    try:
        body = await _read_body(request, held)
        scan = scan_body(body)
        # What decoding will allocate, paid before it happens: the containers of each value,
        # and the characters of its strings at the width Python will store them in (a 7 MiB
        # string ending in one astral character takes 28 MiB).
        decoded = min(scan.values, MAX_VALUES) * BYTES_PER_VALUE + decoded_string_bytes(body)
        if not held.take_now(decoded):
            await held.take(decoded, BUDGET_WAIT)
    except BudgetExhausted as e:
        raise BadReview(f"too many large reviews in flight; retry ({e})", status=429) from e
    except TimeoutError as e:
        raise BadReview("timed out reading the request body") from e
    except HttpProcessingError as e:  # a malformed chunked body and the like
        raise BadReview(f"cannot read the request body: {clip(str(e.message))}") from e
    return decode_review(body, scan)


async def handle_mutate(request: web.Request) -> web.Response:
    app = request.app
    guard = app[GUARD]
    guard.request_started(request)
    large = False
    held = app[BUDGET].hold()
    try:
        try:
            response = await _mutate(request, app, held)
            large = held.amount >= LARGE_REVIEW_BYTES
        finally:
            held.release()  # what the request held, given back however it ended
        if app[STATE].shutting_down:
            # Draining: no keep-alive. The API server's next admission then opens a new
            # connection, which the Service sends to a ready replica, instead of riding a
            # kept-alive one into this replica's exit.
            response.force_close()
        return response
    finally:
        guard.request_finished(request, large=large)


async def _mutate(request: web.Request, app: web.Application, held: Held) -> web.Response:
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        api_version, req = await _read_review(request, held)
    except BadReview as e:
        log.warning("bad admission request: %s", clip(str(e), LOGGED_MESSAGE_MAX))
        metrics.count_admission("bad_request", time.perf_counter() - started)
        resp = _json(bad_request(e), status=e.status)
        resp.force_close()  # a refused body is not worth keeping the connection for
        return resp

    uid = req["uid"]
    with log_context(uid=uid, op=req["operation"], namespace=req.get("namespace", "")) as context:
        try:
            verdict = await _admit(app, req, context)
        except Exception as e:  # a bug of ours must not turn into an API server error
            # One line at ERROR (no traceback: its frames may quote the request); the
            # traceback only at DEBUG, for whoever is chasing the bug.
            log.error("admission failed unexpectedly: %s", clip(repr(e), LOGGED_MESSAGE_MAX))
            log.debug("admission failure detail", exc_info=True)
            verdict = failed(uid, fail_closed=app[CONFIG].current.admission.fail_closed)
    metrics.count_admission(verdict.result, time.perf_counter() - started)
    return _json(review(api_version, encode(verdict)))


async def _admit(app: web.Application, req: AdmissionRequest, context: log_context) -> Verdict:
    config = app[CONFIG].current
    decision = admission.plan(req, config)
    if isinstance(decision, Skip):
        if log.isEnabledFor(logging.DEBUG):  # clip() is not free; most pods are skipped
            log.debug("allowed unchanged: %s", clip(decision.reason, LOGGED_MESSAGE_MAX))
        return left_alone(req["uid"], "skipped", decision.reason)
    plan: Plan = decision
    context.add(pod=plan.pod_name)  # made one printable line, cut, by log_context
    try:  # one coroutine less per admission than a helper around the call
        outcome = await app[SOURCE].ensure(
            plan.namespace, plan.needs, budget=config.admission.budget_seconds, dry_run=plan.dry_run
        )
    except Exception as e:  # the source promises not to raise; stay safe if it does
        outcome = _source_failed(plan, e)
    verdict = admission.respond(plan, outcome, fail_closed=config.admission.fail_closed)
    if isinstance(verdict, Denied):
        log.warning("denied: %s", clip(verdict.message, LOGGED_MESSAGE_MAX))
    elif verdict.result == "refused":
        if log.isEnabledFor(logging.DEBUG):
            log.debug("allowed unchanged: %s", clip(verdict.why, LOGGED_MESSAGE_MAX))
    else:
        for w in verdict.warnings:
            log.warning("%s", w)
        if verdict.result == "patched":
            log.debug("patched imagePullSecrets with %d secret(s)", len(plan.needs))
    return verdict


def _source_failed(plan: Plan, e: Exception) -> Outcome:
    log.error("secret source failed: %s", clip(repr(e), LOGGED_MESSAGE_MAX))
    log.debug("secret source failure detail", exc_info=True)
    status = admission.NeedStatus("pending", f"internal error ({type(e).__name__})")
    return Outcome({n.secret_name: status for n in plan.needs})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def handle_readyz(request: web.Request) -> web.Response:
    reasons = request.app[STATE].not_ready_reasons()
    if reasons:
        return web.Response(status=503, text="not ready: " + "; ".join(reasons))
    return web.Response(text="ok")


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_webhook_app(
    store: ConfigStore,
    source: SecretSource,
    metrics: Metrics,
    state: ServerState,
    guard: ConnectionGuard | None = None,
) -> web.Application:
    # client_max_size is aiohttp's own cap; ours is enforced while streaming the body.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app[CONFIG] = store
    app[SOURCE] = source
    app[METRICS] = metrics
    app[STATE] = state
    app[BUDGET] = Budget(MEMORY_BUDGET_BYTES)
    app[GUARD] = guard or ConnectionGuard()
    # Every method: a GET or PUT still gets an AdmissionReview (405), not aiohttp's text.
    app.router.add_route("*", "/mutate", handle_mutate)
    return app


def create_health_app(metrics: Metrics, state: ServerState) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[STATE] = state
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/livez", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    return app


@dataclass
class ServeOptions:
    cert_file: str
    key_file: str
    host: str = "0.0.0.0"  # noqa: S104 - a webhook serves the cluster network
    port: int = 8443
    health_host: str = "0.0.0.0"  # noqa: S104
    health_port: int = 8080
    max_connections: int = MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_handshaking: int = MAX_HANDSHAKING
    health: bool = True
    """Serve /healthz, /readyz and /metrics (only a replica's primary worker does)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT so several worker processes share ``port``."""


@dataclass
class RunningServer:
    """Handles of a started server, for tests and the CLI."""

    runners: list[web.AppRunner]
    tls: ReloadingTLS
    state: ServerState
    port: int
    health_port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    guard: ConnectionGuard | None = None

    async def stop(self) -> None:
        self.state.shutting_down = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self.guard is not None:
            self.guard.close_unsettled()
        for runner in self.runners:
            await runner.cleanup()


async def start_server(
    store: ConfigStore,
    source: SecretSource,
    options: ServeOptions,
    metrics: Metrics | None = None,
    state: ServerState | None = None,
) -> RunningServer:
    metrics = metrics or Metrics()
    state = state or ServerState()
    limit_tls_read_buffer()
    _quiet_parser_errors()
    guard = ConnectionGuard(
        max_connections=options.max_connections,
        header_timeout=options.header_timeout,
        on_close=lambda reason: metrics.connections_closed.labels(reason).inc(),
        handshake_timeout=options.handshake_timeout,
        max_handshaking=options.max_handshaking,
    )

    def on_reload(ok: bool) -> None:
        metrics.cert_reloads.labels("ok" if ok else "error").inc()
        if ok:
            _publish_expiry(metrics, tls)

    tls = ReloadingTLS(options.cert_file, options.key_file, on_reload=on_reload)
    _publish_expiry(metrics, tls)
    hook = web.AppRunner(
        create_webhook_app(store, source, metrics, state, guard),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        access_log=None,
        lingering_time=LINGERING_SECONDS,
        # Bodies are read as sent; a Content-Encoding is refused in the handler.
        auto_decompress=False,
    )
    await hook.setup()
    site = GatedTLSSite(
        hook,
        options.host,
        options.port,
        ssl_context=tls.context,
        guard=guard,
        reuse_port=options.reuse_port or None,
    )
    await site.start()
    runners = [hook]
    health_port = 0
    if options.health:
        health = web.AppRunner(create_health_app(metrics, state), access_log=None)
        await health.setup()
        await web.TCPSite(health, options.health_host, options.health_port).start()
        runners.append(health)
        health_port = _bound_port(health)
    running = RunningServer(
        runners=runners,
        tls=tls,
        state=state,
        port=_bound_port(hook),
        health_port=health_port,
        guard=guard,
    )
    running.tasks.append(asyncio.create_task(tls.watch()))
    assert hook.server is not None  # set by setup()
    running.tasks.append(asyncio.create_task(guard.watch(hook.server)))
    return running


class _MalformedHTTPFilter(logging.Filter):
    """aiohttp logs a request it cannot parse at ERROR with a traceback; that is a client's
    fault, not ours: one clipped WARNING line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed HTTP request refused by the parser: %s"
            record.args = (clip(str(exc.message), LOGGED_MESSAGE_MAX),)
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_parser_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedHTTPFilter) for f in logger.filters):
        logger.addFilter(_MalformedHTTPFilter())


def _publish_expiry(metrics: Metrics, tls: ReloadingTLS) -> None:
    for which, when in tls.not_after.items():
        metrics.certificate_expiry.labels(which).set(when)


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise RuntimeError("server is not listening")


#: After SIGTERM a replica keeps serving, while /readyz says "not ready", for this long:
#: endpoints controllers and kube-proxy need a few seconds to stop sending it new
#: connections, and an admission refused in that window would go unpatched.
SHUTDOWN_DELAY = 5.0


async def serve_forever(
    running: RunningServer,
    shutdown_delay: float = SHUTDOWN_DELAY,
    on_signal: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight admissions and stop.

    ``on_signal`` is told of the signal first (the primary worker passes it on)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop(sig: int) -> None:
        if on_signal is not None:
            on_signal(sig)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    if running.health_port:
        log.info(
            "serving /mutate on :%d (TLS), health and metrics on :%d",
            running.port,
            running.health_port,
        )
    else:
        log.info("serving /mutate on :%d (TLS)", running.port)
    await stopping.wait()
    running.state.shutting_down = True
    log.info("shutting down: not ready, still serving for %gs", shutdown_delay)
    await asyncio.sleep(shutdown_delay)
    log.info("shutting down: finishing in-flight admissions")
    await running.stop()
