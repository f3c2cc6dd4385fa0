"""What an emulated registry host puts in front of the real registry: distribution's
error body, and ``/v2/`` passed through to docker-registry untouched.

The ACR login servers and the Artifact Registry hosts both serve their own token
service beside ``/v2/`` on one HTTPS listener, as the real hosts do; the registry behind
them checks the tokens those services sign.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
    | {"proxy-authenticate", "proxy-authorization", "date", "server"}
)
_CHUNK = 64 * 1024  # proxy copy buffer: large enough for few writes, small enough to stream


def registry_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error in the distribution spec's shape: ``{"errors": [{code, message, detail}]}``."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.json_response(body, status=status, headers=headers)


async def proxy(
    request: web.Request, session: aiohttp.ClientSession | None, upstream: str | None
) -> web.StreamResponse:
    """``request`` replayed against ``upstream`` (a base URL), its answer streamed back."""
    if upstream is None or session is None:
        return registry_error(503, "UNAVAILABLE", "no registry is attached to this host")
    headers = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
    )
    try:
        answer = await session.request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        )
    except aiohttp.ClientError as exc:
        # What a registry host answers when its storage backend is unreachable.
        return registry_error(502, "UNAVAILABLE", f"backing registry unreachable: {exc}")
    async with answer:
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in answer.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
