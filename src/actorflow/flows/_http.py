"""The ``http`` task: an async HTTP(S) request (httpx, imported when the first one runs)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from actorflow.runtime import NonRetryableError, Runnable, TaskFailure

if TYPE_CHECKING:
    import httpx

    from actorflow.runtime import TaskContext

#: Total time a request may take (connect, redirects, the whole body) without a ``timeout``.
DEFAULT_TIMEOUT = 60.0
#: Largest response body accepted without a ``max_size`` (as Kestra's maxContentLength).
DEFAULT_MAX_SIZE = 10 << 20
MAX_REDIRECTS = 10
_SCHEMES = ("http", "https")


class HttpError(TaskFailure):
    """A request that got no complete, acceptable response."""


class _Shared:
    """One client per event loop, shared by the requests in flight: connections are reused
    between them, and closed with the last one (no socket outlives the requests)."""

    __slots__ = ("client", "users")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.users = 0


_SHARED: anyio.lowlevel.RunVar[_Shared | None] = anyio.lowlevel.RunVar(
    "actorflow_http_client", default=None
)


@contextlib.asynccontextmanager
async def _client() -> Any:
    import httpx  # only once a flow makes a request: most never do

    shared = _SHARED.get()
    if shared is None:
        # No cap on connections: the flows' own concurrency limits say how many run at once.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        shared = _Shared(httpx.AsyncClient(limits=limits, timeout=None, follow_redirects=False))
        _SHARED.set(shared)
    shared.users += 1
    try:
        yield shared.client
    finally:
        shared.users -= 1
        if shared.users == 0:
            if _SHARED.get() is shared:
                _SHARED.set(None)
            with anyio.CancelScope(shield=True):
                await shared.client.aclose()


def _check_scheme(url: str, what: str) -> None:
    scheme = url.partition(":")[0].lower()
    if scheme not in _SCHEMES or "://" not in url:
        raise NonRetryableError(f"{what} must be an http:// or https:// URL, got {url!r}")


@dataclass(frozen=True, kw_only=True)
class HttpRequest(Runnable):
    """An HTTP(S) request; outputs ``code``, ``headers`` and ``body`` (JSON decoded if JSON).

    Status >= 400 fails the task unless ``allow_failed``. Only http and https URLs are
    accepted, redirects included. The task's ``timeout`` (default ``DEFAULT_TIMEOUT``) bounds
    the whole request; a body larger than ``max_size`` bytes, or shorter than its
    Content-Length, fails it. A kill cancels the request at once.
    """

    uri: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str | None = None
    allow_failed: bool = False
    max_size: int = DEFAULT_MAX_SIZE
    follow_redirects: bool = True

    async def run(self, ctx: TaskContext) -> Any:
        uri = str(ctx.render(self.uri, field="uri"))
        _check_scheme(uri, "uri")
        headers = {
            str(k): str(v) for k, v in ctx.render(dict(self.headers), field="headers").items()
        }
        body = ctx.render(self.body, field="body")
        data: bytes | None = None
        content_type = self.content_type
        if body is not None:
            if isinstance(body, str | bytes):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = json.dumps(body).encode()
                content_type = content_type or "application/json"
        if content_type:
            headers.setdefault("Content-Type", content_type)
        if self.timeout is None:
            # With a timeout, the engine bounds the attempt (and so the request) itself.
            try:
                with anyio.fail_after(DEFAULT_TIMEOUT):
                    code, resp_headers, raw, final = await self._send(uri, headers, data)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.method} {uri}: no complete response within {DEFAULT_TIMEOUT:g}s"
                ) from None
        else:
            code, resp_headers, raw, final = await self._send(uri, headers, data)
        text = raw.decode("utf-8", errors="replace")
        out_body: Any = text
        if "json" in resp_headers.get("content-type", "").lower():
            with contextlib.suppress(ValueError):
                out_body = json.loads(text)
        ctx.log.info(f"{self.method} {final} -> {code}")
        if code >= 400 and not self.allow_failed:
            raise HttpError(f"{self.method} {final} failed with status {code}: {text[:200]}")
        return {"code": code, "headers": resp_headers, "body": out_body, "uri": final}

    async def _send(
        self, uri: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[int, dict[str, str], bytes, str]:
        import httpx

        async with _client() as client:
            request = client.build_request(self.method, uri, headers=headers, content=data)
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    response = await client.send(request, stream=True)
                    try:
                        nxt = response.next_request if self.follow_redirects else None
                        if nxt is not None:
                            _check_scheme(str(nxt.url), f"redirect from {request.url}")
                            request = nxt
                            continue
                        raw = await self._read(response, str(request.url))
                        return (response.status_code, dict(response.headers.items()), raw,
                                str(request.url))  # fmt: skip
                    finally:
                        await response.aclose()
            except httpx.HTTPError as exc:
                raise HttpError(f"{self.method} {request.url}: {exc}") from exc
        raise HttpError(f"{self.method} {uri}: more than {MAX_REDIRECTS} redirects")

    async def _read(self, response: httpx.Response, url: str) -> bytes:
        limit = self.max_size
        declared = response.headers.get("content-length")
        too_big = (
            f"{self.method} {url}: the response body is larger than max_size ({limit} bytes);"
            " raise max_size to accept it"
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise NonRetryableError(f"{too_big} (Content-Length {declared})")
        chunks: list[bytes] = []
        size = 0
        # Decoded bytes are counted: a compressed body cannot expand past the limit either.
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise NonRetryableError(too_big)
            chunks.append(chunk)
        return b"".join(chunks)
