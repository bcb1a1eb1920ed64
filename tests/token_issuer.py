"""A tiny Docker token issuer for the tests: Basic credentials in, an RS256 JWT out.

It speaks the token protocol of CNCF distribution (docs/spec/auth/token.md): the registry
challenges with `Bearer realm=<issuer>/token,service=...,scope=...`, the client asks
`GET /token?service=...&scope=...` with Basic credentials, and gets `{"token": <JWT>, ...}`.

The JWT is signed with a throwaway RSA key; its self-signed certificate is the registry's
`rootcertbundle`, and the JWT header carries it in `x5c` so that distribution 2.8 can find the
key. The server runs on its own event loop in a thread, because the tests run the CLI with a
blocking `subprocess.run` while the issuer must keep answering.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOKEN_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An RSA key and a self-signed certificate for it."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign_jwt(self, claims: dict[str, object]) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode("ascii")]}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request the issuer received, and what it answered."""

    service: str | None
    scopes: tuple[str, ...]
    username: str | None
    status: int
    token: str | None


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """`repository:team/app:pull,push` → (type, name, actions), or None when not a scope."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [action for action in actions.split(",") if action]


@dataclass
class TokenIssuer:
    """The issuer for `users`; `certificate` is the PEM file to give the registry."""

    directory: Path
    users: dict[str, str]
    issuer: str = "registry-canary-test-issuer"
    service: str = "registry-canary-test-registry"
    # Sign with a key whose certificate is not in the registry's bundle (a forged token).
    untrusted: bool = False
    # Grant only these actions of what a scope asks for; None grants everything asked.
    grant: frozenset[str] | None = None
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.trusted_key = SigningKey.generate("registry-canary test token issuer")
        self.untrusted_key = SigningKey.generate("registry-canary untrusted signer")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.certificate = self.directory / "token-issuer.pem"
        self.certificate.write_bytes(self.trusted_key.pem())
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def received(self) -> list[TokenRequest]:
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> TokenIssuer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _username(self, header: str) -> str | None:
        """The user of a Basic Authorization header whose password is right, else None."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        expected = self.users.get(username)
        if not sep or expected is None or not secrets.compare_digest(password, expected):
            return None
        return username

    async def _token(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        scopes = tuple(request.query.getall("scope", []))
        username = self._username(request.headers.get("Authorization", ""))
        if username is None:
            self._record(TokenRequest(service, scopes, None, 401, None))
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "wrong username or password"}]},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="token issuer"'},
            )
        now = int(time.time())
        access = [
            {
                "type": kind,
                "name": name,
                "actions": [a for a in actions if self.grant is None or a in self.grant],
            }
            for kind, name, actions in filter(None, map(parse_scope, scopes))
        ]
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": username,
            "aud": service or self.service,
            "exp": now + TOKEN_SECONDS,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        key = self.untrusted_key if self.untrusted else self.trusted_key
        token = key.sign_jwt(claims)
        self._record(TokenRequest(service, scopes, username, 200, token))
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response(
            {"token": token, "expires_in": TOKEN_SECONDS, "issued_at": issued_at}
        )
