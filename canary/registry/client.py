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
from canary.config import DIGEST_RE, BlobCheck, Environment
from canary.registry.auth import Authenticator, pull_scope
from canary.registry.errors import (
    TRANSPORT_ERRORS,
    RegistryError,
    Subject,
    failure,
    outcome_for_exception,
    outcome_for_response,
)
from canary.registry.media import (
    ACCEPT,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    manifest_digest,
)
from canary.registry.response import (
    Response,
    check_head,
    check_range,
    range_header,
    verify_body,
)
from canary.results import Fetch, Hop, Outcome
from canary.servers import Alertmanager, GitLab

USER_AGENT = f"registry-canary/{__version__}"
MAX_REDIRECTS = 5
ERROR_BODY_BYTES = 64 * 1024
READ_BUFFER = 1024 * 1024
# The referrers API pages its answer with Link headers; a registry that never stops is cut off.
MAX_REFERRER_PAGES = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
        foreign: bool = False,
    ) -> AsyncIterator[Response]:
        """Send a request to the registry, answering one 401 and following redirects.

        `path` is under the registry's origin, or an absolute URL the registry handed out.
        Unless `limited` is false (requests that are not part of a pull), it takes one of the
        environment's `concurrency` request slots. A `foreign` request goes to a URL a manifest
        names (a non-distributable layer's source): it is never authenticated, and its hop is
        `foreign` throughout.

        Failures before the response is in hand raise RegistryError; the caller reads the body.
        """
        async with self._limit if limited else contextlib.nullcontext():
            if not foreign:
                await self._ping()
            for attempt in (1, 2):
                authorization = None if foreign else await self._auth.header(scope)
                url = path if path.startswith(("http://", "https://")) else self.base_url + path
                response = await self._follow(
                    method,
                    url,
                    authorization,
                    headers or {},
                    data,
                    where,
                    Hop.FOREIGN if foreign else Hop.REGISTRY,
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
        where: Where | None = None,
        hop: Hop = Hop.REGISTRY,
    ) -> Response:
        registry = origin(self.base_url)
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
            url = target
            hop = Hop.STORAGE if hop is Hop.REGISTRY else hop
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
            body = await response.read_document(MAX_MANIFEST_BYTES, "manifest")
            served = raw.headers.get("Docker-Content-Digest")
            content_type = raw.headers.get("Content-Type")
            # Per algorithm, the digest as registries define it (schema 1: of the payload).
            digests: dict[str, str] = {}
            for claimed, whose in (
                (served, "the registry's Docker-Content-Digest"),
                (expected_digest, pinned),
            ):
                if not claimed:
                    continue
                if not DIGEST_RE.fullmatch(claimed):
                    fetch = response.fail(Outcome.INVALID_RESPONSE, f"{whose} is not a digest")
                    raise RegistryError(fetch)
                algorithm = claimed.partition(":")[0]
                if algorithm not in digests:
                    digests[algorithm] = manifest_digest(body, content_type, algorithm)
                if digests[algorithm] != claimed:
                    fetch = response.fail(
                        Outcome.DIGEST_MISMATCH,
                        f"manifest body is {digests[algorithm]}, {whose} is {claimed}",
                    )
                    raise RegistryError(replace(fetch, digest=digests[algorithm]))
            algorithm = (expected_digest or served or "sha256").partition(":")[0]
            digest = digests.get(algorithm) or manifest_digest(body, content_type, algorithm)
            return Manifest(
                body=body,
                digest=digest,
                content_type=content_type,
                fetch=replace(response.ok(len(body)), digest=digest),
            )

    async def fetch_blob(
        self,
        repository: str,
        blob: Descriptor,
        mode: BlobCheck,
        keep_up_to: int = 0,
        where: Where | None = None,
        url: str | None = None,
    ) -> tuple[Fetch, bytes | None]:
        """Fetch one blob as `mode` says and verify what can be verified; never raises.

        With `keep_up_to`, a verified body no larger than that is returned too (for configs).
        `where` follows the request across redirects, for whoever gives up on it midway.
        With `url`, the blob is fetched there (one of a foreign layer's `urls`) rather than from
        the registry, without the registry's credentials.
        """
        path = url or f"/v2/{repository}/blobs/{blob.digest}"
        method = "HEAD" if mode is BlobCheck.HEAD else "GET"
        headers = {}
        if mode is BlobCheck.RANGE and (wanted := range_header(blob)):
            headers["Range"] = wanted
        hop = Hop.FOREIGN if url else Hop.REGISTRY
        at = url or f"{self.base_url}{path}"
        try:
            async with self.open(
                method,
                path,
                scope=pull_scope(repository),
                subject="blob",
                headers=headers,
                where=where,
                foreign=url is not None,
            ) as response:
                hop, at = response.hop, response.url
                if response.raw.status not in (200, 206):
                    return await error_fetch(response, "blob", method), None
                if mode is BlobCheck.GET:
                    small = blob.size is not None and blob.size <= keep_up_to
                    keep: list[bytes] | None = [] if small else None
                    fetch = await verify_body(response, blob, keep)
                    body = (
                        b"".join(keep) if keep is not None and fetch.outcome is Outcome.OK else None
                    )
                    return fetch, body
                if mode is BlobCheck.RANGE:
                    return await check_range(response, blob), None
                return check_head(response, blob), None
        except RegistryError as exc:
            return exc.fetch, None
        except TRANSPORT_ERRORS as exc:
            return outcome_for_exception(exc, hop=hop, url=at), None

    async def get_referrers(self, repository: str, digest: str) -> tuple[Fetch, list[bytes]]:
        """The OCI 1.1 referrers API's answer for `digest`, every page of it; never raises.

        A 404 means the registry has no referrers API (the spec's signal to fall back to the
        tag schema); the caller reads it from the Fetch.
        """
        path: str | None = f"/v2/{repository}/referrers/{digest}"
        pages: list[bytes] = []
        fetch = Fetch(outcome=Outcome.OK, hop=Hop.REGISTRY, status=None)
        while path is not None and len(pages) < MAX_REFERRER_PAGES:
            url = path if path.startswith(("http://", "https://")) else self.base_url + path
            try:
                async with self.open(
                    "GET",
                    path,
                    scope=pull_scope(repository),
                    subject="other",
                    headers={"Accept": OCI_INDEX},
                ) as response:
                    if response.raw.status != 200:
                        return await error_fetch(response, "other", "GET"), pages
                    pages.append(await response.read_document(MAX_MANIFEST_BYTES, "referrers list"))
                    fetch = response.ok(len(pages[-1]))
                    path = next_page(response.raw.headers.getall("Link", []), response.url)
            except RegistryError as exc:
                return exc.fetch, pages
            except TRANSPORT_ERRORS as exc:
                return outcome_for_exception(exc, hop=Hop.REGISTRY, url=url), pages
        return fetch, pages


def next_page(links: list[str], url: str) -> str | None:
    """The `rel="next"` target of Link headers, resolved against the page it came with."""
    for header in links:
        for link in header.split(","):
            target, _, params = link.partition(";")
            target = target.strip()
            rels = [p.strip().replace(" ", "") for p in params.split(";")]
            if (
                target.startswith("<")
                and target.endswith(">")
                and ('rel="next"' in rels or "rel=next" in rels)
            ):
                return urljoin(url, target[1:-1])
    return None


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
