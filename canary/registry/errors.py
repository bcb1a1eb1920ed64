"""Turn registry responses and transport failures into an Outcome with evidence.

Exceptions raised by the client:

    RegistryError          a request ended in something other than success; carries a Fetch
    └── (nothing else: transport exceptions are translated in `outcome_for_exception`)

aiohttp and asyncio exceptions are translated at exactly one place, `outcome_for_exception`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from canary.results import Evidence, Fetch, Hop, Outcome

# Headers that correlate a request with the server's logs, most specific first.
REQUEST_ID_HEADERS = (
    "X-Request-Id",
    "X-Correlation-Id",
    "X-Amz-Request-Id",
    "X-Amz-Cf-Id",
    "X-Goog-Request-Id",
    "X-GUploader-UploadID",
    "X-Ms-Request-Id",
    "CF-Ray",
    "X-Served-By",
)

_CODES = {
    "BLOB_UNKNOWN": Outcome.BLOB_UNKNOWN,
    "MANIFEST_UNKNOWN": Outcome.MANIFEST_UNKNOWN,
    "NAME_UNKNOWN": Outcome.NAME_UNKNOWN,
    "MANIFEST_BLOB_UNKNOWN": Outcome.MANIFEST_BLOB_UNKNOWN,
    "UNAUTHORIZED": Outcome.UNAUTHORIZED,
    "DENIED": Outcome.DENIED,
    "TOOMANYREQUESTS": Outcome.TOOMANYREQUESTS,
    "UNAVAILABLE": Outcome.UNAVAILABLE,
}

_STATUSES = {401: Outcome.UNAUTHORIZED, 403: Outcome.DENIED, 429: Outcome.TOOMANYREQUESTS}

MAX_TEXT = 300
# What a request can fail with before or while its answer arrives.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)

Subject = Literal["manifest", "blob", "other"]


class RegistryError(Exception):
    """A request ended in an outcome other than ok; `fetch` says how and where."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        detail = fetch.evidence.detail if fetch.evidence else fetch.outcome
        super().__init__(f"{fetch.outcome}: {detail}")


def safe_url(url: str) -> str:
    """A URL without user info, query or fragment: signed storage URLs carry secrets there."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # an unclosed bracket: nothing safe to show but that it was bad
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None  # a bad port is shown as nothing rather than raise on a server's answer
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def request_id(headers: Mapping[str, str]) -> str | None:
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return _clip(value)
    return None


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """The first (code, message, detail) of an OCI `{"errors": [...]}` body, or Nones."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None, None
    first = errors[0]
    code = first.get("code")
    message = first.get("message")
    detail = first.get("detail")
    if detail is not None and not isinstance(detail, str):
        detail = json.dumps(detail, sort_keys=True, default=str)
    return (
        _clip(code) if isinstance(code, str) else None,
        _clip(message) if isinstance(message, str) else None,
        _clip(detail) if isinstance(detail, str) else None,
    )


def outcome_for_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    subject: Subject,
    hop: Hop,
    url: str,
) -> Fetch:
    """Classify a non-success response; the OCI error code decides when the body has one."""
    code, message, detail = parse_error_body(body) if body else (None, None, None)
    outcome = _CODES.get(code or "")
    if outcome is None:
        if status == 404 and subject == "blob":
            outcome = Outcome.BLOB_UNKNOWN
        elif status == 404 and subject == "manifest":
            outcome = Outcome.MANIFEST_UNKNOWN
        elif status in _STATUSES:
            outcome = _STATUSES[status]
        elif 400 <= status < 500:
            outcome = Outcome.HTTP_4XX
        elif status >= 500:
            outcome = Outcome.HTTP_5XX
        else:
            outcome = Outcome.INVALID_RESPONSE
    summary = f"HTTP {status}"
    if code:
        summary += f" {code}"
    if message:
        summary += f": {message}"
    rid = request_id(headers)
    evidence = Evidence(
        detail=summary,
        url=safe_url(url),
        status=status,
        code=code,
        # The OCI `detail` often repeats the digest already in the URL; keep it only when new.
        message=message if not detail or detail in url else f"{message or ''} ({detail})".strip(),
        request_id=rid,
    )
    return Fetch(outcome=outcome, hop=hop, status=status, request_id=rid, evidence=evidence)


def outcome_for_exception(exc: BaseException, *, hop: Hop, url: str) -> Fetch:
    """Translate a transport failure; the one place aiohttp and asyncio errors are mapped."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        outcome, detail = Outcome.TIMEOUT, "timed out"
    elif isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError
    ):
        outcome, detail = Outcome.TLS_ERROR, _tls_detail(exc)
    elif isinstance(exc, aiohttp.ClientPayloadError):
        outcome, detail = Outcome.CONNECTION_ERROR, "the body ended early"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        outcome, detail = Outcome.CONNECTION_ERROR, "the server closed the connection"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        outcome, detail = (
            Outcome.CONNECTION_ERROR,
            f"cannot connect: {exc.os_error.strerror or exc}",
        )
    elif isinstance(exc, aiohttp.ClientError | OSError):
        outcome, detail = Outcome.CONNECTION_ERROR, _clip(f"{type(exc).__name__}: {exc}")
    else:
        outcome, detail = Outcome.INVALID_RESPONSE, _clip(f"{type(exc).__name__}: {exc}")
    evidence = Evidence(detail=detail, url=safe_url(url))
    return Fetch(outcome=outcome, hop=hop, status=None, evidence=evidence)


def _tls_detail(exc: BaseException) -> str:
    cause: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientSSLError) and exc.os_error is not None:
        cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return _clip(f"certificate verification failed: {cause.verify_message}")
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return _clip(f"TLS failed: {cause.reason}")
    return _clip(f"TLS failed: {cause}")


def failure(
    outcome: Outcome,
    detail: str,
    *,
    hop: Hop,
    url: str,
    status: int | None = None,
    request_id_: str | None = None,
) -> Fetch:
    """A Fetch for a failure found by checking content rather than by the server's status."""
    evidence = Evidence(
        detail=_clip(detail), url=safe_url(url), status=status, request_id=request_id_
    )
    return Fetch(outcome=outcome, hop=hop, status=status, request_id=request_id_, evidence=evidence)
