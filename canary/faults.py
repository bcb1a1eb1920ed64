"""A fault-injecting HTTP proxy between the canary and a registry, for tests and the soak.

`FaultProxy(upstream)` forwards every request to `upstream` on a thread and event loop of its
own, streaming bodies both ways, passing methods and end-to-end headers through, and leaving
redirects for the client to follow (a `Location` on the upstream's origin is rewritten to the
proxy, so the requests that follow still pass through it). `inject(pattern, fault, **params)`
makes the requests whose path matches `pattern` (`re.search`) misbehave; the latest matching
rule wins, and a rule applies to every matching request until cleared, or to its first `times`.

    with FaultProxy(registry.url) as proxy:
        proxy.inject(r"/blobs/", Fault.RESET_BODY)
        proxy.inject(r"/manifests/", Fault.LATENCY, seconds=3, times=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

START_SECONDS = 20.0
STOP_SECONDS = 10.0
CHUNK_BYTES = 64 * 1024
DEFAULT_OVERSIZED_BYTES = 5 * 1024 * 1024
DEFAULT_CUT = 0.5  # where STALL_BODY, RESET_BODY and TRUNCATE cut a body, as a fraction
DEFAULT_LIE_BYTES = 1024  # how much LYING_LENGTH adds to the real length
FLUSH_SECONDS = 2.0
# Time for the client to read what was sent before the connection is reset under it.
RESET_GRACE_SECONDS = 0.05

# RFC 9110 7.6.1, plus the proxy ones: never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


class Fault(StrEnum):
    """What a matching request gets instead of (or on top of) the upstream's answer."""

    LATENCY = "latency"  # delay the response by `seconds`, then forward
    STALL_BODY = "stall_body"  # send headers and half the body (`at`), hold for `seconds`
    RESET_BODY = "reset_body"  # send headers and part of the body (`at`), then reset (RST)
    TRUNCATE = "truncate"  # send a shorter body (`at`) than Content-Length says, and close
    LYING_LENGTH = "lying_length"  # Content-Length `extra` bytes larger than the body, close
    STATUS = "status"  # answer `status` with `body` (bytes or None) and `headers`
    TOO_MANY_REQUESTS = "too_many_requests"  # 429, Retry-After: `retry_after`, OCI body
    REDIRECT_LOOP = "redirect_loop"  # 307 to itself, forever
    REDIRECT_TO = "redirect_to"  # 307 to `location`
    OVERSIZED = "oversized"  # 200 with `size` bytes of JSON-looking data (`chunked`: no length)
    MALFORMED_JSON = "malformed_json"  # `status` (200) with a body that is not JSON
    CONTENT_TYPE = "content_type"  # forward, with Content-Type replaced by `content_type`


# Each fault's parameters and their defaults; `times` is accepted by all.
_PARAMS: dict[Fault, dict[str, Any]] = {
    Fault.LATENCY: {"seconds": 1.0},
    Fault.STALL_BODY: {"seconds": 60.0, "at": DEFAULT_CUT},
    Fault.RESET_BODY: {"at": DEFAULT_CUT},
    Fault.TRUNCATE: {"at": DEFAULT_CUT},
    Fault.LYING_LENGTH: {"extra": DEFAULT_LIE_BYTES},
    Fault.STATUS: {"status": 500, "body": None, "headers": None},
    Fault.TOO_MANY_REQUESTS: {"retry_after": 1},
    Fault.REDIRECT_LOOP: {},
    Fault.REDIRECT_TO: {"location": None},
    Fault.OVERSIZED: {"size": DEFAULT_OVERSIZED_BYTES, "chunked": False},
    Fault.MALFORMED_JSON: {"status": 200, "body": b"<html><body>not json {", "content_type": None},
    Fault.CONTENT_TYPE: {"content_type": "text/plain"},
}
_REQUIRED = {Fault.REDIRECT_TO: ("location",)}


@dataclass(slots=True)
class _Rule:
    pattern: str
    regex: re.Pattern[str]
    fault: Fault
    params: dict[str, Any]
    remaining: int | None


class _Closing(Exception):
    """The proxy is closing: a held request gives up."""


def _cut_position(at: float, length: int | None) -> int | None:
    """Where to cut a body: `at` bytes (an int), or that fraction of `length` (a float);
    None to cut after the first chunk, when the length is not known."""
    if isinstance(at, int) and not isinstance(at, bool):
        return at
    if length is None:
        return None
    return int(length * at)


def _end_to_end(headers: Any) -> CIMultiDict[str]:
    """The headers a proxy passes on: all but hop-by-hop ones and those `Connection` names."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }
    passed: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in named:
            passed.add(name, value)
    return passed


class FaultProxy:
    """An HTTP proxy in front of `upstream` that injects faults into the requests it is told to,
    on a thread and event loop of its own, so it answers while the caller blocks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        parts = urlsplit(self.upstream)
        self._upstream_origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.port = 0
        self.hits: dict[str, int] = {}
        self.requests = 0
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free loopback port; returns once it accepts connections."""
        self._thread.start()
        if not self._ready.wait(timeout=START_SECONDS) or not self.port:
            raise RuntimeError("the fault proxy did not start") from self._start_error

    def close(self) -> None:
        """Stop: held requests are dropped at once, and the thread ends."""
        if not self._thread.is_alive():
            if self._thread.ident is None and not self._loop.is_closed():
                self._loop.close()  # never started
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=STOP_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_SECONDS)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._setup())
        except BaseException as exc:  # reported by start()
            self._start_error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _setup(self) -> None:
        self._closing = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            # Send what the client sent and nothing else.
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])

    async def _shutdown(self) -> None:
        assert self._closing is not None
        self._closing.set()
        for task in list(self._handlers):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- rules -----------------------------------------------------------------------------

    def inject(self, pattern: str, fault: Fault, **params: Any) -> None:
        """Apply `fault` to requests whose path matches `pattern` (re.search), until cleared,
        or to the next `times` of them; a later matching rule takes precedence."""
        fault = Fault(fault)
        times = params.pop("times", None)
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be a positive integer, not {times!r}")
        known = _PARAMS[fault]
        unknown = set(params) - set(known)
        if unknown:
            raise TypeError(f"{fault} takes no parameter {', '.join(sorted(unknown))}")
        for name in _REQUIRED.get(fault, ()):
            if params.get(name) is None:
                raise TypeError(f"{fault} needs the parameter {name}")
        body = params.get("body")
        if fault in (Fault.STATUS, Fault.MALFORMED_JSON) and not isinstance(body, bytes | None):
            raise TypeError(f"the {fault} body is bytes or None")
        rule = _Rule(pattern, re.compile(pattern), fault, {**known, **params}, times)
        with self._lock:
            self._rules.append(rule)

    def clear(self, pattern: str | None = None) -> None:
        """Drop every rule, or those injected with exactly `pattern`."""
        with self._lock:
            self._rules = [r for r in self._rules if pattern is not None and r.pattern != pattern]

    def _take(self, path: str) -> _Rule | None:
        """The rule for a request to `path`, counted as applied; None to forward as is."""
        with self._lock:
            self.requests += 1
            for rule in reversed(self._rules):
                if rule.regex.search(path):
                    break
            else:
                return None
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
            self.hits[rule.fault.value] = self.hits.get(rule.fault.value, 0) + 1
            return rule

    # -- serving ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            rule = self._take(request.path)
            if rule is None:
                return await self._forward(request)
            return await self._apply(request, rule.fault, rule.params)
        except _Closing:
            _abort(request, reset=False)
            return web.Response(status=503)
        finally:
            self._handlers.discard(task)

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or raise _Closing as soon as the proxy closes."""
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), max(0.0, float(seconds)))
        if self._closing.is_set():
            raise _Closing

    async def _apply(
        self, request: web.Request, fault: Fault, params: dict[str, Any]
    ) -> web.StreamResponse:
        if fault is Fault.LATENCY:
            await self._pause(params["seconds"])
            return await self._forward(request)
        if fault is Fault.STALL_BODY:
            seconds = params["seconds"]
            return await self._forward(request, cut=params["at"], at_cut=self._stall(seconds))
        if fault is Fault.RESET_BODY:
            return await self._forward(request, cut=params["at"], at_cut=_reset)
        if fault is Fault.TRUNCATE:
            return await self._forward(request, cut=params["at"], at_cut=_hang_up)
        if fault is Fault.LYING_LENGTH:
            return await self._forward(request, extra_length=int(params["extra"]))
        if fault is Fault.CONTENT_TYPE:
            return await self._forward(request, content_type=str(params["content_type"]))
        if fault is Fault.STATUS:
            return _status(int(params["status"]), params["body"], params["headers"])
        if fault is Fault.TOO_MANY_REQUESTS:
            return _too_many_requests(params["retry_after"])
        if fault is Fault.REDIRECT_LOOP:
            return _redirect(self.url + request.path_qs)
        if fault is Fault.REDIRECT_TO:
            return _redirect(str(params["location"]))
        if fault is Fault.OVERSIZED:
            return await _oversized(request, int(params["size"]), bool(params["chunked"]))
        if fault is Fault.MALFORMED_JSON:
            return _malformed(int(params["status"]), params["body"], params["content_type"])
        raise AssertionError(f"unhandled fault {fault}")  # pragma: no cover - Fault is closed

    def _stall(self, seconds: float) -> Callable[[web.Request], Awaitable[bool]]:
        async def stall(request: web.Request) -> bool:
            await _flush(request)
            await self._pause(seconds)
            return True  # then send the rest

        return stall

    def _rewrite_location(self, location: str) -> str:
        parts = urlsplit(location)
        if parts.scheme and f"{parts.scheme}://{parts.netloc}".lower() == self._upstream_origin:
            rest = location[len(parts.scheme) + 3 + len(parts.netloc) :]
            return self.url + rest
        return location

    async def _forward(
        self,
        request: web.Request,
        *,
        cut: float | None = None,
        at_cut: Callable[[web.Request], Awaitable[bool]] | None = None,
        extra_length: int = 0,
        content_type: str | None = None,
    ) -> web.StreamResponse:
        """Pass the request upstream and stream the answer back, optionally cutting its body at
        `cut` (`at_cut` says whether to go on), or announcing `extra_length` more bytes."""
        assert self._session is not None
        headers = _end_to_end(request.headers)
        headers.popall("Host", None)
        data: AsyncIterator[bytes] | None = None
        if request.body_exists:
            data = request.content.iter_chunked(CHUNK_BYTES)
        elif "Content-Length" not in headers and request.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = "0"
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"fault proxy: upstream failed: {exc}")
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in _end_to_end(upstream.headers).items():
                if name.lower() == "location":
                    value = self._rewrite_location(value)
                response.headers.add(name, value)
            if content_type is not None:
                response.headers["Content-Type"] = content_type
            length = upstream.content_length
            chunks: AsyncIterator[bytes] = upstream.content.iter_chunked(CHUNK_BYTES)
            if extra_length:
                if length is None:
                    # Unknown length: read it all to know how much to lie about.
                    body = await upstream.read()
                    length, chunks = len(body), _chunks_of(body)
                response.headers["Content-Length"] = str(length + extra_length)
            if extra_length or cut is not None:
                response.force_close()
            try:
                await response.prepare(request)
                if cut is not None and at_cut is not None:
                    position = _cut_position(cut, length)
                    if not await _send_cut(request, response, chunks, position, at_cut):
                        return response
                async for chunk in chunks:
                    await response.write(chunk)
                if extra_length:
                    await _flush(request)
                    _abort(request, reset=False)
                    return response
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                # The client went away, or the upstream did: drop the connection.
                _abort(request, reset=False)
            return response
        finally:
            upstream.release()


async def _chunks_of(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), CHUNK_BYTES):
        yield body[start : start + CHUNK_BYTES]


async def _send_cut(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    position: int | None,
    at_cut: Callable[[web.Request], Awaitable[bool]],
) -> bool:
    """Send the body up to `position` (or its first chunk when None), then run `at_cut`; the
    rest of `chunks` is left to the caller. A body shorter than `position` is cut at its end."""
    sent = 0
    async for chunk in chunks:
        split = len(chunk) if position is None else max(0, position - sent)
        if position is not None and split >= len(chunk):
            await response.write(chunk)
            sent += len(chunk)
            continue
        await response.write(chunk[:split])
        go_on = await at_cut(request)
        if go_on and chunk[split:]:
            await response.write(chunk[split:])
        return go_on
    return await at_cut(request)


async def _flush(request: web.Request) -> None:
    """Wait until what was written has left for the client, so a fault comes after it."""
    transport = request.transport
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FLUSH_SECONDS
    while transport is not None and not transport.is_closing():
        if transport.get_write_buffer_size() == 0 or loop.time() > deadline:
            return
        await asyncio.sleep(0.005)


def _abort(request: web.Request, *, reset: bool) -> None:
    """Drop the connection: with a TCP reset (RST) when `reset`, else closed (FIN)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _reset(request: web.Request) -> bool:
    await _flush(request)
    await asyncio.sleep(RESET_GRACE_SECONDS)
    _abort(request, reset=True)
    return False


async def _hang_up(request: web.Request) -> bool:
    await _flush(request)
    _abort(request, reset=False)
    return False


def _status(status: int, body: bytes | None, headers: dict[str, str] | None) -> web.Response:
    response = web.Response(status=status, body=body, headers=headers or {})
    if body is not None and "Content-Type" not in response.headers:
        try:
            json.loads(body)
            response.content_type = "application/json"
        except ValueError:
            response.content_type = "text/plain"
    return response


def _too_many_requests(retry_after: float | str) -> web.Response:
    body = {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "too many requests",
                "detail": "injected by the fault proxy",
            }
        ]
    }
    return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})


def _redirect(location: str) -> web.Response:
    return web.Response(status=307, headers={"Location": location})


def _malformed(status: int, body: bytes, content_type: str | None) -> web.Response:
    if content_type is None:
        content_type = (
            "application/vnd.oci.image.manifest.v1+json" if status == 200 else "application/json"
        )
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def _oversized(request: web.Request, size: int, chunked: bool) -> web.StreamResponse:
    """A 200 whose body looks like the start of a manifest and goes on for `size` bytes."""
    head = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    head += b'"annotations":{"padding":"'
    tail = b'"}}'
    padding = max(0, size - len(head) - len(tail))
    response = web.StreamResponse(status=200)
    response.content_type = "application/vnd.oci.image.manifest.v1+json"
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(head) + padding + len(tail)
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            await response.write(head)
            block = b"A" * CHUNK_BYTES
            while padding > 0:
                await response.write(block[: min(padding, CHUNK_BYTES)])
                padding -= min(padding, CHUNK_BYTES)
            await response.write(tail)
        await response.write_eof()
    except (ConnectionError, aiohttp.ClientError):
        _abort(request, reset=False)
    return response
