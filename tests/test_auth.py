"""Unit tests of canary.registry.auth: challenge parsing, Basic, and the Bearer token cache."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from canary.registry.auth import (
    DEFAULT_TOKEN_SECONDS,
    EXPIRY_MARGIN_SECONDS,
    Authenticator,
    Challenge,
    parse_www_authenticate,
    pull_scope,
)
from canary.registry.errors import RegistryError
from canary.results import Hop, Outcome
from canary.testbed import free_port

REGISTRY = "http://127.0.0.1:5999"
USER = "canary"
PASSWORD = "s3cret:with colon"
CREDENTIALS = (USER, SecretStr(PASSWORD))
SCOPE = "repository:team/app:pull"
SERVICE = "registry.test"
START = 1000.0


class TestParseWwwAuthenticate:
    def test_bearer_with_quoted_realm_service_scope(self) -> None:
        """A Docker-style Bearer challenge yields its realm, service and scope, scheme lowered."""
        header = (
            'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
            'scope="repository:library/alpine:pull"'
        )
        assert parse_www_authenticate(header) == [
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.example.com/token",
                    "service": "registry.example.com",
                    "scope": "repository:library/alpine:pull",
                },
            )
        ]

    def test_scope_with_commas_and_colons_stays_whole(self) -> None:
        """Commas and colons inside a quoted scope do not split it or end the challenge."""
        header = (
            'Bearer realm="https://auth.example.com:8443/token",'
            'scope="repository:team/app:pull,push repository:team/base:pull",'
            'error="insufficient_scope"'
        )
        [challenge] = parse_www_authenticate(header)
        assert challenge.params == {
            "realm": "https://auth.example.com:8443/token",
            "scope": "repository:team/app:pull,push repository:team/base:pull",
            "error": "insufficient_scope",
        }

    def test_basic_realm(self) -> None:
        """A Basic challenge yields scheme basic and its realm, spaces included."""
        assert parse_www_authenticate('Basic realm="Registry Realm"') == [
            Challenge("basic", {"realm": "Registry Realm"})
        ]

    def test_scheme_without_parameters(self) -> None:
        """A bare scheme is a challenge with no parameters."""
        assert parse_www_authenticate("Basic") == [Challenge("basic", {})]

    def test_several_challenges_in_one_header(self) -> None:
        """Every challenge of a header comes back, in order, each with only its own parameters."""
        header = 'Basic realm="basic-realm", Bearer realm="https://auth/token",service="svc"'
        assert parse_www_authenticate(header) == [
            Challenge("basic", {"realm": "basic-realm"}),
            Challenge("bearer", {"realm": "https://auth/token", "service": "svc"}),
        ]

    def test_rfc7235_example(self) -> None:
        """The RFC 7235 example parses into its two challenges, tokens and escapes included."""
        header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
        assert parse_www_authenticate(header) == [
            Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
            Challenge("basic", {"realm": "simple"}),
        ]

    def test_unquoted_token_values(self) -> None:
        """Parameter values written as bare tokens are taken up to the next delimiter."""
        header = "Bearer realm=registry,service=registry.example.com, error=invalid_token"
        [challenge] = parse_www_authenticate(header)
        assert challenge.params == {
            "realm": "registry",
            "service": "registry.example.com",
            "error": "invalid_token",
        }

    def test_escaped_quotes_and_backslashes(self) -> None:
        """A backslash in a quoted string escapes the next character, quote or backslash."""
        [challenge] = parse_www_authenticate(r'Bearer realm="a \"quoted\" C:\\path",service="s"')
        assert challenge.params == {"realm": 'a "quoted" C:\\path', "service": "s"}

    def test_empty_quoted_value(self) -> None:
        """An empty quoted value is kept as an empty string, not dropped."""
        [challenge] = parse_www_authenticate('Bearer realm="",service="svc"')
        assert challenge.params == {"realm": "", "service": "svc"}

    def test_case_and_whitespace(self) -> None:
        """Scheme and parameter names are case-insensitive; whitespace around `=` is allowed."""
        [challenge] = parse_www_authenticate('BEARER  Realm = "https://A/token" ,\tSERVICE=Svc')
        assert challenge == Challenge("bearer", {"realm": "https://A/token", "service": "Svc"})

    def test_empty_header(self) -> None:
        """An empty or blank header has no challenges."""
        assert parse_www_authenticate("") == []
        assert parse_www_authenticate(" \t, ,") == []

    def test_valid_challenge_after_garbage_is_found(self) -> None:
        """Junk in front of a challenge does not hide the Bearer challenge that follows."""
        challenges = parse_www_authenticate('=== "stray" , Bearer realm="https://auth/token"')
        assert Challenge("bearer", {"realm": "https://auth/token"}) in challenges

    @pytest.mark.parametrize(
        "header",
        [
            "=",
            '"',
            "\\",
            "===,,,",
            'Bearer realm="unterminated',
            'Bearer realm="ends with backslash\\',
            "Bearer =value",
            "Bearer realm=",
            "Bearer realm=,",
            'realm="no scheme"',
            "Bearer realm=\x00\x01\x7f",
            "Bearer réalm=\u00e9t\u00e9, \U0001f600",
            "Negotiate YIIBhgYGKwYBBQUCoIIBejCCAX==, Bearer",
            "Bearer " + "a=b," * 2000,
            '"' * 1001,
            "Bearer realm=" + "\\" * 999,
        ],
    )
    def test_garbage_never_raises(self, header: str) -> None:
        """Malformed headers give a list of well-formed challenges instead of an exception."""
        challenges = parse_www_authenticate(header)
        assert isinstance(challenges, list)
        for challenge in challenges:
            assert isinstance(challenge, Challenge)
            assert challenge.scheme == challenge.scheme.lower()
            assert all(
                isinstance(k, str) and isinstance(v, str) for k, v in challenge.params.items()
            )

    def test_random_headers_never_raise(self) -> None:
        """Thousands of random headers built from delimiter-heavy characters all parse."""
        rng = random.Random(7235)  # noqa: S311 - fuzz input, not a secret
        alphabet = 'Bearer Basic realm=scope"\\,; \t:/=é\x00'
        for _ in range(3000):
            header = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
            for challenge in parse_www_authenticate(header):
                assert isinstance(challenge.params, dict)


@dataclass
class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    now: float = START

    def __call__(self) -> float:
        return self.now


Reply = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def _default_reply(request: web.Request, number: int) -> web.StreamResponse:
    return web.json_response({"token": f"token-{number}", "expires_in": 300})


@dataclass
class TokenEndpoint:
    """A token server whose answers a test chooses; it records every request it receives."""

    realm: str = ""
    requests: list[web.Request] = field(default_factory=list)
    reply: Reply = _default_reply

    @property
    def count(self) -> int:
        return len(self.requests)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        return await self.reply(request, len(self.requests))


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    """A token endpoint on loopback at `/token`."""
    token_endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_get("/token", token_endpoint.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    token_endpoint.realm = str(server.make_url("/token"))
    yield token_endpoint
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def bearer(
    session: aiohttp.ClientSession,
    realm: str,
    clock: FakeClock,
    credentials: tuple[str, SecretStr] | None = CREDENTIALS,
) -> Authenticator:
    """An Authenticator that has learnt a Bearer challenge pointing at `realm`."""
    auth = Authenticator(session, REGISTRY, credentials, clock=clock)
    assert auth.learn({"WWW-Authenticate": f'Bearer realm="{realm}",service="{SERVICE}"'})
    return auth


def basic_value(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class TestChallenges:
    def test_anonymous_sends_nothing(self, session: aiohttp.ClientSession) -> None:
        """After an unchallenged /v2/, the authenticator is known and gives no header."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS)
        assert not auth.known
        auth.anonymous()
        assert auth.known
        assert auth.challenge is None

    async def test_anonymous_header_is_none(self, session: aiohttp.ClientSession) -> None:
        """An anonymous registry gets requests without an Authorization header."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS)
        auth.anonymous()
        assert await auth.header(SCOPE) is None

    async def test_basic_challenge_answers_with_credentials(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint
    ) -> None:
        """A Basic challenge is answered with base64 user:password and no token request."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS)
        assert auth.learn({"WWW-Authenticate": 'Basic realm="registry"'})
        assert await auth.header(SCOPE) == basic_value(USER, PASSWORD)
        assert endpoint.count == 0

    async def test_basic_challenge_without_credentials(
        self, session: aiohttp.ClientSession
    ) -> None:
        """A Basic challenge with no configured credentials is an unauthorized outcome."""
        auth = Authenticator(session, REGISTRY, None)
        auth.learn({"WWW-Authenticate": 'Basic realm="registry"'})
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        assert caught.value.fetch.outcome is Outcome.UNAUTHORIZED
        assert caught.value.fetch.status == 401

    def test_learn_refuses_unsupported_schemes(self, session: aiohttp.ClientSession) -> None:
        """A header with only unsupported schemes (or none) is not learnt."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS)
        assert not auth.learn({"WWW-Authenticate": 'Negotiate, Digest realm="x", nonce="y"'})
        assert not auth.learn({})
        assert not auth.known
        assert auth.challenge is None

    def test_learn_takes_first_supported_challenge(self, session: aiohttp.ClientSession) -> None:
        """Among several challenges, the first Basic or Bearer one is kept."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS)
        header = 'Negotiate, Bearer realm="https://auth/token", Basic realm="r"'
        assert auth.learn({"WWW-Authenticate": header})
        assert auth.challenge == Challenge("bearer", {"realm": "https://auth/token"})
        assert auth.known

    def test_pull_scope(self) -> None:
        """The pull scope of a repository is `repository:<name>:pull`."""
        assert pull_scope("team/app") == "repository:team/app:pull"


class TestTokenCache:
    def test_lifetime_constants(self) -> None:
        """Tokens default to the spec's 60 seconds and are refreshed a few seconds early."""
        assert DEFAULT_TOKEN_SECONDS == 60
        assert 0 < EXPIRY_MARGIN_SECONDS <= 10

    async def test_token_request_carries_scope_service_and_credentials(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """The token is asked for with the scope, the challenge's service and Basic credentials."""
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        [request] = endpoint.requests
        assert request.query["scope"] == SCOPE
        assert request.query["service"] == SERVICE
        assert request.headers["Authorization"] == basic_value(USER, PASSWORD)

    async def test_realm_query_and_missing_service(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A query in the realm is kept, and no service is sent when the challenge has none."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS, clock=clock)
        assert auth.learn({"WWW-Authenticate": f'Bearer realm="{endpoint.realm}?account=ci"'})
        assert await auth.header(SCOPE) == "Bearer token-1"
        [request] = endpoint.requests
        assert dict(request.query) == {"account": "ci", "scope": SCOPE}

    async def test_anonymous_token_request(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """Without credentials the token is asked for without an Authorization header."""
        auth = bearer(session, endpoint.realm, clock, credentials=None)
        assert await auth.header(SCOPE) == "Bearer token-1"
        assert "Authorization" not in endpoint.requests[0].headers

    async def test_reused_until_expiry_minus_margin(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A token is reused for every request until just before expires_in minus the margin."""
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        for moment in (START, START + 100, START + 300 - EXPIRY_MARGIN_SECONDS - 0.001):
            clock.now = moment
            assert await auth.header(SCOPE) == "Bearer token-1"
        assert endpoint.count == 1

    async def test_refreshed_at_expiry_minus_margin(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """Once expires_in minus the margin has passed, a new token is fetched and then reused."""
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + 300 - EXPIRY_MARGIN_SECONDS
        assert await auth.header(SCOPE) == "Bearer token-2"
        clock.now += 1
        assert await auth.header(SCOPE) == "Bearer token-2"
        assert endpoint.count == 2

    async def test_short_lived_token_renewed_at_half_its_life(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A token living less than twice the margin is reused for half its life, not
        fetched again for every request."""

        async def short(request: web.Request, number: int) -> web.StreamResponse:
            return web.json_response({"token": f"token-{number}", "expires_in": 2})

        endpoint.reply = short
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + 0.999
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + 1
        assert await auth.header(SCOPE) == "Bearer token-2"
        assert endpoint.count == 2

    async def test_expiry_counts_from_request_start(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A slow token response does not stretch the token's life: expiry counts from asking."""

        async def slow(request: web.Request, number: int) -> web.StreamResponse:
            clock.now += 10  # the answer takes ten seconds
            return web.json_response({"token": f"token-{number}", "expires_in": 300})

        endpoint.reply = slow
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + 300 - EXPIRY_MARGIN_SECONDS
        assert await auth.header(SCOPE) == "Bearer token-2"

    @pytest.mark.parametrize("expires_in", [None, 0, -30, "300", True, [300]], ids=repr)
    async def test_default_lifetime_when_expires_in_unusable(
        self,
        session: aiohttp.ClientSession,
        endpoint: TokenEndpoint,
        clock: FakeClock,
        expires_in: object,
    ) -> None:
        """A missing or unusable expires_in means the spec's default lifetime of 60 seconds."""

        async def reply(request: web.Request, number: int) -> web.StreamResponse:
            document: dict[str, object] = {"token": f"token-{number}"}
            if expires_in is not None:
                document["expires_in"] = expires_in
            return web.json_response(document)

        endpoint.reply = reply
        auth = bearer(session, endpoint.realm, clock)
        await auth.header(SCOPE)
        clock.now = START + DEFAULT_TOKEN_SECONDS - EXPIRY_MARGIN_SECONDS - 0.001
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + DEFAULT_TOKEN_SECONDS - EXPIRY_MARGIN_SECONDS
        assert await auth.header(SCOPE) == "Bearer token-2"

    @pytest.mark.parametrize("raw", [b"NaN", b"1" + b"0" * 400], ids=["nan", "huge-int"])
    async def test_default_lifetime_when_expires_in_not_finite(
        self,
        session: aiohttp.ClientSession,
        endpoint: TokenEndpoint,
        clock: FakeClock,
        raw: bytes,
    ) -> None:
        """An expires_in that is not a finite number of seconds means the default lifetime."""

        async def reply(request: web.Request, number: int) -> web.StreamResponse:
            body = b'{"token": "token-%d", "expires_in": %s}' % (number, raw)
            return web.Response(body=body, content_type="application/json")

        endpoint.reply = reply
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer token-1"
        clock.now = START + DEFAULT_TOKEN_SECONDS - EXPIRY_MARGIN_SECONDS
        assert await auth.header(SCOPE) == "Bearer token-2"

    @pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "abc\ndef", "abc\x00def"])
    async def test_token_unusable_in_a_header_is_invalid_response(
        self,
        session: aiohttp.ClientSession,
        endpoint: TokenEndpoint,
        clock: FakeClock,
        token: str,
    ) -> None:
        """A token with control characters is an invalid_response, not a header to send."""

        async def reply(request: web.Request, number: int) -> web.StreamResponse:
            return web.json_response({"token": token, "expires_in": 300})

        endpoint.reply = reply
        auth = bearer(session, endpoint.realm, clock)
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        assert caught.value.fetch.outcome is Outcome.INVALID_RESPONSE

    async def test_access_token_accepted(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """An OAuth2-style `access_token` is used when there is no `token`."""

        async def oauth(request: web.Request, number: int) -> web.StreamResponse:
            return web.json_response({"access_token": f"oauth-{number}", "expires_in": 300})

        endpoint.reply = oauth
        auth = bearer(session, endpoint.realm, clock)
        assert await auth.header(SCOPE) == "Bearer oauth-1"
        assert await auth.header(SCOPE) == "Bearer oauth-1"
        assert endpoint.count == 1

    @pytest.mark.parametrize(
        "body",
        [
            b'{"expires_in": 300}',
            b'{"token": "", "expires_in": 300}',
            b'{"token": null, "access_token": null}',
            b'{"token": 12345}',
            b'["token"]',
            b"not json at all",
            b"",
        ],
        ids=["missing", "empty", "null", "number", "list", "text", "no-body"],
    )
    async def test_missing_token_is_invalid_response(
        self,
        session: aiohttp.ClientSession,
        endpoint: TokenEndpoint,
        clock: FakeClock,
        body: bytes,
    ) -> None:
        """A 200 from the token endpoint without a usable token is an invalid_response."""

        async def reply(request: web.Request, number: int) -> web.StreamResponse:
            return web.Response(body=body, content_type="application/json")

        endpoint.reply = reply
        auth = bearer(session, endpoint.realm, clock)
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        fetch = caught.value.fetch
        assert fetch.outcome is Outcome.INVALID_RESPONSE
        assert fetch.hop is Hop.REGISTRY
        assert fetch.evidence is not None
        assert fetch.evidence.url == endpoint.realm

    async def test_token_endpoint_401_is_unauthorized(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A 401 from the token endpoint is an unauthorized outcome naming the endpoint."""

        async def refuse(request: web.Request, number: int) -> web.StreamResponse:
            return web.json_response({"details": "bad credentials"}, status=401)

        endpoint.reply = refuse
        auth = bearer(session, endpoint.realm, clock)
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        fetch = caught.value.fetch
        assert fetch.outcome is Outcome.UNAUTHORIZED
        assert fetch.status == 401
        assert fetch.evidence is not None
        # The evidence names the endpoint without the query, and never the credentials.
        assert fetch.evidence.url == endpoint.realm
        assert PASSWORD not in str(caught.value)
        assert PASSWORD not in repr(fetch)

    async def test_failure_is_not_cached(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """After a refused token request, the next request asks the endpoint again."""

        async def refuse_first(request: web.Request, number: int) -> web.StreamResponse:
            if number == 1:
                return web.json_response({}, status=401)
            return web.json_response({"token": f"token-{number}", "expires_in": 300})

        endpoint.reply = refuse_first
        auth = bearer(session, endpoint.realm, clock)
        with pytest.raises(RegistryError):
            await auth.header(SCOPE)
        assert await auth.header(SCOPE) == "Bearer token-2"

    async def test_token_endpoint_5xx(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A 503 from the token endpoint is an http_5xx outcome."""

        async def broken(request: web.Request, number: int) -> web.StreamResponse:
            return web.Response(status=503, text="down for maintenance")

        endpoint.reply = broken
        auth = bearer(session, endpoint.realm, clock)
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        assert caught.value.fetch.outcome is Outcome.HTTP_5XX

    async def test_token_endpoint_unreachable(
        self, session: aiohttp.ClientSession, clock: FakeClock
    ) -> None:
        """A token endpoint nobody listens on is a connection_error outcome."""
        auth = bearer(session, f"http://127.0.0.1:{free_port()}/token", clock)
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        assert caught.value.fetch.outcome is Outcome.CONNECTION_ERROR

    @pytest.mark.parametrize(
        "header", ['Bearer service="svc"', 'Bearer realm="/token"', 'Bearer realm="ftp://h/t"']
    )
    async def test_unusable_realm_is_invalid_response(
        self, session: aiohttp.ClientSession, clock: FakeClock, header: str
    ) -> None:
        """A Bearer challenge without an absolute http(s) realm is an invalid_response."""
        auth = Authenticator(session, REGISTRY, CREDENTIALS, clock=clock)
        assert auth.learn({"WWW-Authenticate": header})
        with pytest.raises(RegistryError) as caught:
            await auth.header(SCOPE)
        assert caught.value.fetch.outcome is Outcome.INVALID_RESPONSE

    async def test_concurrent_requests_fetch_one_token(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """Many requests in one scope waiting for a token share a single token request."""

        async def slow(request: web.Request, number: int) -> web.StreamResponse:
            await asyncio.sleep(0.05)
            return web.json_response({"token": f"token-{number}", "expires_in": 300})

        endpoint.reply = slow
        auth = bearer(session, endpoint.realm, clock)
        headers = await asyncio.gather(*(auth.header(SCOPE) for _ in range(20)))
        assert set(headers) == {"Bearer token-1"}
        assert endpoint.count == 1

    async def test_scopes_have_their_own_tokens(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """Each scope gets and keeps its own token."""
        auth = bearer(session, endpoint.realm, clock)
        other = "repository:team/other:pull"
        assert await auth.header(SCOPE) == "Bearer token-1"
        assert await auth.header(other) == "Bearer token-2"
        assert await auth.header(SCOPE) == "Bearer token-1"
        assert await auth.header(other) == "Bearer token-2"
        assert [r.query["scope"] for r in endpoint.requests] == [SCOPE, other]

    async def test_forget_drops_the_token(
        self, session: aiohttp.ClientSession, endpoint: TokenEndpoint, clock: FakeClock
    ) -> None:
        """A forgotten scope fetches a fresh token on its next request; other scopes keep theirs."""
        auth = bearer(session, endpoint.realm, clock)
        other = "repository:team/other:pull"
        await auth.header(SCOPE)
        await auth.header(other)
        auth.forget(SCOPE)
        auth.forget("repository:never/asked:pull")
        assert await auth.header(SCOPE) == "Bearer token-3"
        assert await auth.header(other) == "Bearer token-2"
