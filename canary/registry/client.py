"""One environment's registry as a runtime sees it: manifests and blobs, auth, redirects, limits."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import aiohttp

from canary import __version__
from canary.config import BlobCheck, Environment
from canary.registry.auth import Authenticator, pull_scope
from canary.registry.errors import (
    RegistryError,
    Subject,
    failure,
    outcome_for_exception,
    outcome_for_response,
    request_id,
)
from canary.registry.media import (
    ACCEPT,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Digester,
    ManifestError,
    digest_of,
)
from canary.results import Fetch, Hop, Outcome
from canary.servers import Alertmanager, GitLab

USER_AGENT = f"registry-canary/{__version__}"
MAX_REDIRECTS = 5
TOO_BIG = "manifest larger than 4 MiB"
RANGE_BYTES = 1024
ERROR_BODY_BYTES = 64 * 1024
READ_BUFFER = 1024 * 1024
STREAM_READ_BYTES = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def ssl_context(server: Environment | Alertmanager | GitLab) -> ssl.SSLContext | bool:
    if not server.tls_verify:
        return False
    if server.ca_file is not None:
        return ssl.create_default_context(cafile=str(server.ca_file))
    return True


# Without a usable Retry-After a 429 still means "slow down"; a huge one is capped, so a
# misconfigured registry cannot silence the canary for days.
DEFAULT_RETRY_AFTER = 30.0
MAX_RETRY_AFTER = 600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    now = time.time() if now is None else now
    if not value:
        return DEFAULT_RETRY_AFTER
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        if moment.tzinfo is None:
            return DEFAULT_RETRY_AFTER
        seconds = moment.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass(slots=True)
class Where:
    """Which server a request in flight is talking to, kept current across redirects."""

    hop: Hop
    url: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest body whose digest has been checked against the registry's and the pin."""

    body: bytes
    digest: str
    content_type: str | None
    fetch: Fetch


@dataclass(slots=True)
class Response:
    """A response in hand: which hop answered, at which URL (after redirects)."""

    raw: aiohttp.ClientResponse
    hop: Hop
    url: str

    def ok(self, received: int) -> Fetch:
        return Fetch(
            outcome=Outcome.OK,
            hop=self.hop,
            status=self.raw.status,
            bytes=received,
            request_id=request_id(self.raw.headers),
        )

    def fail(self, outcome: Outcome, detail: str) -> Fetch:
        """A failure found in the content of a response the server called a success."""
        return failure(
            outcome,
            detail,
            hop=self.hop,
            url=self.url,
            status=self.raw.status,
            request_id_=request_id(self.raw.headers),
        )

    async def read_up_to(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body; fewer only when the body ends first."""
        data = b""
        while len(data) < limit:
            more = await self.raw.content.read(limit - len(data))
            if not more:
                break
            data += more
        return data


class RegistryClient:
    """Speaks the distribution API to one environment, with at most `concurrency` requests open."""

    def __init__(
        self, environment: Environment, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.environment = environment
        self.base_url = environment.url
        self._own_session = session is None
        self._session = session or make_session(environment)
        self._auth = Authenticator(self._session, self.base_url, environment.credentials())
        self._limit = asyncio.Semaphore(environment.concurrency)
        self._ping_lock = asyncio.Lock()
        # Wall-clock time until which the registry asked for no requests (429 Retry-After).
        self.backoff_until = 0.0

    def _rate_limited(self, retry_after: str | None) -> None:
        wait = parse_retry_after(retry_after)
        self.backoff_until = max(self.backoff_until, time.time() + wait)

    def backoff_remaining(self) -> float:
        """Seconds the registry asked to be left alone for (429 Retry-After); 0 when none."""
        return max(0.0, self.backoff_until - time.time())

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self._session.close()

    async def _ping(self) -> None:
        """Learn how the registry wants to be authenticated, once, from `GET /v2/`."""
        if self._auth.known:
            return
        async with self._ping_lock:
            if self._auth.known:
                return
            url = f"{self.base_url}/v2/"
            try:
                async with self._session.get(url, allow_redirects=False) as response:
                    if response.status == 200:
                        self._auth.anonymous()
                        return
                    if response.status == 401 and self._auth.learn(response.headers):
                        return
                    body = await response.content.read(ERROR_BODY_BYTES)
                    raise RegistryError(
                        outcome_for_response(
                            response.status,
                            response.headers,
                            body,
                            subject="other",
                            hop=Hop.REGISTRY,
                            url=url,
                        )
                    )
            except TRANSPORT_ERRORS as exc:
                raise RegistryError(outcome_for_exception(exc, hop=Hop.REGISTRY, url=url)) from exc

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        subject: Subject,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        limited: bool = True,
        where: Where | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request to the registry, answering one 401 and following redirects.

        `path` is under the registry's origin, or an absolute URL the registry handed out.
        Unless `limited` is false (requests that are not part of a pull), it takes one of the
        environment's `concurrency` request slots.

        Failures before the response is in hand raise RegistryError; the caller reads the body.
        """
        async with self._limit if limited else contextlib.nullcontext():
            await self._ping()
            for attempt in (1, 2):
                authorization = await self._auth.header(scope)
                url = path if path.startswith(("http://", "https://")) else self.base_url + path
                response = await self._follow(
                    method, url, authorization, headers or {}, data, subject, where
                )
                if (
                    response.raw.status == 401
                    and attempt == 1
                    and response.hop is Hop.REGISTRY
                    and self._auth.learn(response.raw.headers)
                ):
                    # An expired token or a changed challenge: fetch a fresh token once.
                    response.raw.release()
                    self._auth.forget(scope)
                    continue
                if response.raw.status == 429:
                    self._rate_limited(response.raw.headers.get("Retry-After"))
                try:
                    yield response
                finally:
                    response.raw.release()
                return

    async def _follow(
        self,
        method: str,
        url: str,
        authorization: str | None,
        headers: dict[str, str],
        data: bytes | None,
        subject: Subject,
        where: Where | None = None,
    ) -> Response:
        registry = origin(self.base_url)
        hop = Hop.REGISTRY
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            # The registry's credentials never travel to storage or a CDN on another origin.
            if authorization and origin(url) == registry:
                sent["Authorization"] = authorization
            try:
                raw = await self._session.request(
                    method, url, headers=sent, data=data, allow_redirects=False
                )
            except (*TRANSPORT_ERRORS, ValueError) as exc:
                # ValueError: a URL or header aiohttp refuses to send, built from a server's answer.
                raise RegistryError(outcome_for_exception(exc, hop=hop, url=url)) from exc
            location = raw.headers.get("Location")
            if raw.status not in _REDIRECTS or not location or method not in ("GET", "HEAD"):
                return Response(raw=raw, hop=hop, url=url)
            raw.release()
            try:
                target = urljoin(url, location)
                urlsplit(target).port  # noqa: B018 - raises on a bad port or bracket
            except ValueError:
                raise RegistryError(
                    failure(
                        Outcome.INVALID_RESPONSE,
                        "redirect to an invalid URL",
                        hop=hop,
                        url=url,
                        status=raw.status,
                    )
                ) from None
            if urlsplit(target).scheme not in ("http", "https"):
                raise RegistryError(
                    failure(
                        Outcome.INVALID_RESPONSE,
                        "redirect to a non-HTTP URL",
                        hop=hop,
                        url=url,
                        status=raw.status,
                    )
                )
            url, hop = target, Hop.STORAGE
            if where is not None:
                where.hop, where.url = hop, url
        raise RegistryError(
            failure(
                Outcome.INVALID_RESPONSE, f"more than {MAX_REDIRECTS} redirects", hop=hop, url=url
            )
        )

    async def get_manifest(
        self, repository: str, reference: str, expected_digest: str | None = None
    ) -> Manifest:
        """Fetch a manifest or index by tag or digest and check its digest; raises RegistryError."""
        path = f"/v2/{repository}/manifests/{reference}"
        pinned = "the pinned digest"
        if reference.startswith(("sha256:", "sha512:")):
            expected_digest, pinned = reference, "the digest asked for"
        async with self.open(
            "GET",
            path,
            scope=pull_scope(repository),
            subject="manifest",
            headers={"Accept": ACCEPT},
        ) as response:
            raw = response.raw
            if raw.status != 200:
                raise RegistryError(await error_fetch(response, "manifest", "GET"))
            if (raw.content_length or 0) > MAX_MANIFEST_BYTES:
                raise RegistryError(response.fail(Outcome.INVALID_RESPONSE, TOO_BIG))
            try:
                body = await response.read_up_to(MAX_MANIFEST_BYTES + 1)
            except TRANSPORT_ERRORS as exc:
                fetch = outcome_for_exception(exc, hop=response.hop, url=response.url)
                raise RegistryError(fetch) from exc
            if len(body) > MAX_MANIFEST_BYTES:
                raise RegistryError(response.fail(Outcome.INVALID_RESPONSE, TOO_BIG))
            served = raw.headers.get("Docker-Content-Digest")
            for claimed, whose in (
                (served, "the registry's Docker-Content-Digest"),
                (expected_digest, pinned),
            ):
                if not claimed:
                    continue
                try:
                    digester = Digester(claimed)
                except ManifestError:
                    fetch = response.fail(Outcome.INVALID_RESPONSE, f"{whose} is not a digest")
                    raise RegistryError(fetch) from None
                digester.update(body)
                if not digester.matches:
                    fetch = response.fail(
                        Outcome.DIGEST_MISMATCH,
                        f"manifest body is {digester.actual}, {whose} is {claimed}",
                    )
                    raise RegistryError(replace(fetch, digest=digester.actual))
            algorithm = (expected_digest or served or "sha256").partition(":")[0]
            digest = digest_of(body, algorithm)
            return Manifest(
                body=body,
                digest=digest,
                content_type=raw.headers.get("Content-Type"),
                fetch=replace(response.ok(len(body)), digest=digest),
            )

    async def fetch_blob(
        self,
        repository: str,
        blob: Descriptor,
        mode: BlobCheck,
        keep_up_to: int = 0,
        where: Where | None = None,
    ) -> tuple[Fetch, bytes | None]:
        """Fetch one blob as `mode` says and verify what can be verified; never raises.

        With `keep_up_to`, a verified body no larger than that is returned too (for configs).
        `where` follows the request across redirects, for whoever gives up on it midway.
        """
        path = f"/v2/{repository}/blobs/{blob.digest}"
        method = "HEAD" if mode is BlobCheck.HEAD else "GET"
        headers = {}
        if mode is BlobCheck.RANGE and blob.size > 0:
            headers["Range"] = f"bytes=0-{min(blob.size, RANGE_BYTES) - 1}"
        hop, url = Hop.REGISTRY, f"{self.base_url}{path}"
        try:
            async with self.open(
                method,
                path,
                scope=pull_scope(repository),
                subject="blob",
                headers=headers,
                where=where,
            ) as response:
                hop, url = response.hop, response.url
                if response.raw.status not in (200, 206):
                    return await error_fetch(response, "blob", method), None
                if mode is BlobCheck.GET:
                    keep: list[bytes] | None = [] if blob.size <= keep_up_to else None
                    fetch = await _verify_body(response, blob, keep)
                    body = (
                        b"".join(keep) if keep is not None and fetch.outcome is Outcome.OK else None
                    )
                    return fetch, body
                if mode is BlobCheck.RANGE:
                    return await _check_range(response, blob), None
                return _check_head(response, blob), None
        except RegistryError as exc:
            return exc.fetch, None
        except TRANSPORT_ERRORS as exc:
            return outcome_for_exception(exc, hop=hop, url=url), None


async def error_fetch(response: Response, subject: Subject, method: str) -> Fetch:
    """The outcome a non-success answer maps to, its OCI error body read unless it was a HEAD."""
    body = None
    if method != "HEAD":
        try:
            body = await response.raw.content.read(ERROR_BODY_BYTES)
        except TRANSPORT_ERRORS:
            body = None
    return outcome_for_response(
        response.raw.status,
        response.raw.headers,
        body,
        subject=subject,
        hop=response.hop,
        url=response.url,
    )


def _size_problem(response: Response, blob: Descriptor) -> str | None:
    length = response.raw.content_length
    if response.raw.status == 200 and length is not None and length != blob.size:
        return f"Content-Length is {length}, the descriptor says {blob.size}"
    return None


def _widen_reads(raw: aiohttp.ClientResponse) -> None:
    """Let the socket hand over up to 1 MiB per read while a large body streams.

    asyncio's selector transport reads at most 256 KiB at a time (`max_size`, an attribute of
    CPython's transport, hence the guard); larger reads cut the per-chunk work by a fifth.
    """
    transport = raw.connection.transport if raw.connection is not None else None
    if transport is not None and hasattr(transport, "max_size"):
        setattr(transport, "max_size", STREAM_READ_BYTES)  # noqa: B010 - not in the typed API


async def _verify_body(response: Response, blob: Descriptor, keep: list[bytes] | None) -> Fetch:
    if response.raw.status != 200:
        return response.fail(
            Outcome.INVALID_RESPONSE, f"HTTP {response.raw.status} to a GET without Range"
        )
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    _widen_reads(response.raw)
    digester = Digester(blob.digest)
    received = 0
    async for chunk in response.raw.content.iter_any():
        received += len(chunk)
        if received > blob.size:
            return response.fail(
                Outcome.SIZE_MISMATCH, f"more than the descriptor's {blob.size} bytes"
            )
        digester.update(chunk)
        if keep is not None:
            keep.append(chunk)
    if received != blob.size:
        return response.fail(
            Outcome.SIZE_MISMATCH, f"{received} bytes, the descriptor says {blob.size}"
        )
    if not digester.matches:
        return response.fail(Outcome.DIGEST_MISMATCH, f"content hashes to {digester.actual}")
    return response.ok(received)


async def _check_range(response: Response, blob: Descriptor) -> Fetch:
    wanted = min(blob.size, RANGE_BYTES)
    total = response.raw.headers.get("Content-Range", "").rpartition("/")[2]
    if response.raw.status == 206 and total.isdigit() and int(total) != blob.size:
        return response.fail(
            Outcome.SIZE_MISMATCH,
            f"Content-Range total is {total}, the descriptor says {blob.size}",
        )
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    data = await response.read_up_to(wanted)
    if len(data) < wanted:
        return response.fail(
            Outcome.SIZE_MISMATCH, f"{len(data)} bytes where {wanted} were asked for"
        )
    return response.ok(len(data))


def _check_head(response: Response, blob: Descriptor) -> Fetch:
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    served = response.raw.headers.get("Docker-Content-Digest")
    if served and served != blob.digest:
        return response.fail(Outcome.DIGEST_MISMATCH, f"Docker-Content-Digest is {served}")
    return response.ok(0)


def make_session(environment: Environment) -> aiohttp.ClientSession:
    """A session tuned for verified streaming: no decompression, no cookies, no env proxies."""
    timeout = environment.timeout or 30.0
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            ssl=ssl_context(environment), limit=environment.concurrency * 2
        ),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=READ_BUFFER,
    )
