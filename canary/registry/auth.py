"""Answering registry challenges: WWW-Authenticate parsing, Basic, and a token cache."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from canary.registry.errors import (
    RegistryError,
    failure,
    outcome_for_exception,
    outcome_for_response,
)
from canary.results import Hop, Outcome

DEFAULT_TOKEN_SECONDS = 60
MAX_TOKEN_SECONDS = 86_400
# Refresh a token this long before it expires (half its life if shorter), so a request never
# leaves with a stale one.
EXPIRY_MARGIN_SECONDS = 5.0

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A token goes into a header as is: printable ASCII without spaces (RFC 6750 b64token and more).
_HEADER_SAFE_RE = re.compile(r"[\x21-\x7e]+")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer" (others are kept and refused)
    params: Mapping[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse every challenge of a WWW-Authenticate value (RFC 7235); unparsable text is skipped."""
    challenges: list[Challenge] = []
    pos, length = 0, len(header)
    scheme: str | None = None
    params: dict[str, str] = {}
    while pos < length:
        while pos < length and header[pos] in " \t,":
            pos += 1
        match = _TOKEN_RE.match(header, pos)
        if not match:
            pos += 1
            continue
        word, end = match.group(0), match.end()
        rest = end
        while rest < length and header[rest] in " \t":
            rest += 1
        if rest < length and header[rest] == "=" and scheme is not None:
            rest += 1
            while rest < length and header[rest] in " \t":
                rest += 1
            quoted = _QUOTED_RE.match(header, rest)
            if quoted:
                value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                pos = quoted.end()
            else:
                token = _TOKEN_RE.match(header, rest)
                value = token.group(0) if token else ""
                pos = token.end() if token else rest
            params[word.lower()] = value
            continue
        if scheme is not None:
            challenges.append(Challenge(scheme.lower(), params))
        scheme, params, pos = word, {}, end
    if scheme is not None:
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


@dataclass(slots=True)
class _Token:
    value: SecretStr
    expires_at: float
    refresh_at: float  # fetch a new one from here on


def basic_header(username: str, password: SecretStr) -> str:
    """The Authorization value for HTTP Basic credentials."""
    raw = f"{username}:{password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Authenticator:
    """Answers one registry's challenge for any scope; tokens are kept until near expiry."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry_url: str,
        credentials: tuple[str, SecretStr] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._registry_url = registry_url
        self._credentials = credentials
        self._clock = clock
        self._challenge: Challenge | None = None
        self._known = False
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Take the challenge of a 401 response; True when it is one we can answer."""
        for challenge in parse_www_authenticate(headers.get("WWW-Authenticate", "")):
            if challenge.scheme in ("bearer", "basic"):
                self._challenge = challenge
                self._known = True
                return True
        return False

    def anonymous(self) -> None:
        """The registry answered /v2/ without a challenge: send no credentials."""
        self._challenge = None
        self._known = True

    @property
    def known(self) -> bool:
        return self._known

    def forget(self, scope: str) -> None:
        self._tokens.pop(scope, None)

    def _basic(self) -> str:
        assert self._credentials is not None
        return basic_header(*self._credentials)

    async def header(self, scope: str) -> str | None:
        """The Authorization value for a request in `scope`, fetching a token if needed."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise RegistryError(
                    failure(
                        Outcome.UNAUTHORIZED,
                        "the registry asks for Basic credentials and none are configured",
                        hop=Hop.REGISTRY,
                        url=self._registry_url,
                        status=401,
                    )
                )
            return self._basic()
        token = self._tokens.get(scope)
        if token is None or token.refresh_at <= self._clock():
            lock = self._locks.setdefault(scope, asyncio.Lock())
            async with lock:
                token = self._tokens.get(scope)
                if token is None or token.refresh_at <= self._clock():
                    token = await self._fetch_token(challenge, scope)
                    self._tokens[scope] = token
        return f"Bearer {token.value.get_secret_value()}"

    async def _fetch_token(self, challenge: Challenge, scope: str) -> _Token:
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                failure(
                    Outcome.INVALID_RESPONSE,
                    f"the Bearer challenge has no usable realm ({realm[:80]!r})",
                    hop=Hop.REGISTRY,
                    url=self._registry_url,
                )
            )
        query = {"scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {"Authorization": self._basic()} if self._credentials else {}
        started = self._clock()
        try:
            async with self._session.get(
                realm, params=query, headers=headers, allow_redirects=False
            ) as response:
                body = await response.content.read(64 * 1024)
                if response.status != 200:
                    fetch = outcome_for_response(
                        response.status,
                        response.headers,
                        body,
                        subject="other",
                        hop=Hop.REGISTRY,
                        url=realm,
                    )
                    raise RegistryError(fetch)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryError(outcome_for_exception(exc, hop=Hop.REGISTRY, url=realm)) from exc
        return _parse_token(body, realm, started)


def _parse_token(body: bytes, realm: str, started: float) -> _Token:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise RegistryError(
            failure(
                Outcome.INVALID_RESPONSE,
                "the token endpoint did not answer with a JSON object",
                hop=Hop.REGISTRY,
                url=realm,
                status=200,
            )
        )
    value = document.get("token") or document.get("access_token")
    if not isinstance(value, str) or not _HEADER_SAFE_RE.fullmatch(value):
        raise RegistryError(
            failure(
                Outcome.INVALID_RESPONSE,
                "the token endpoint answered without a usable token",
                hop=Hop.REGISTRY,
                url=realm,
                status=200,
            )
        )
    expires_in = document.get("expires_in", DEFAULT_TOKEN_SECONDS)
    # The chained comparison is False for NaN and cannot overflow on huge integers.
    valid = isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
    if not valid or not 0 < expires_in <= MAX_TOKEN_SECONDS:
        expires_in = DEFAULT_TOKEN_SECONDS
    # Counting from when we asked keeps us on the safe side of the server's clock. A token
    # shorter-lived than twice the margin is renewed at half its life, not on every request.
    lifetime = float(expires_in)
    margin = min(EXPIRY_MARGIN_SECONDS, lifetime / 2)
    return _Token(
        value=SecretStr(value),
        expires_at=started + lifetime,
        refresh_at=started + lifetime - margin,
    )
