"""Building blocks of the config models: the strict base model, durations, files relative to the
config, and secrets read once at load time and never printed."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Nothing the canary waits for is longer; far beyond it, schedulers overflow.
MAX_DURATION_SECONDS = 30 * 86400.0


def parse_duration(value: object) -> float:
    """Turn `500ms`, `30s`, `5m` or `1h` into seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a duration is a string such as 500ms, 30s, 5m or 1h")
    if isinstance(value, int | float):
        raise ValueError(f"duration {value!r} needs a unit: 500ms, 30s, 5m or 1h")
    match = _DURATION_RE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 500ms, 30s, 5m or 1h")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{value!r} is longer than the longest duration, 720h (30 days)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE_RE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}


def parse_size(text: str) -> int:
    """`4096`, `64KiB`, `32MiB`, `10GB` → bytes."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 4096, 64KiB, 32MiB or 10GB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _byte_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a size is a number of bytes or a string such as 512MiB or 10GB")
    size = value if isinstance(value, int) else parse_size(value)
    if size <= 0:
        raise ValueError("a size must be larger than zero")
    return size


ByteSize = Annotated[int, BeforeValidator(_byte_size)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret read at start-up, remembered with where it came from; never printed."""

    origin: str
    value: SecretStr

    def __repr__(self) -> str:
        return f"Secret(origin={self.origin!r}, value='**********')"


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context or {}
    environ: Mapping[str, str] = context.get("environ", os.environ)
    return environ


def base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir", "."))


def _read_secret_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"file {path} cannot be read: {exc.strerror}") from None
    return text.rstrip("\r\n")


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """The `auths` of a docker config.json or a Kubernetes .dockerconfigjson, by host."""

    origin: str
    auths: Mapping[str, tuple[str, SecretStr]]

    def __repr__(self) -> str:
        return f"DockerConfig(origin={self.origin!r}, hosts={sorted(self.auths)!r})"

    def lookup(self, url: str) -> tuple[str, SecretStr] | None:
        host = urlsplit(url).netloc
        for key in (host, url.rstrip("/"), f"https://{host}", f"http://{host}"):
            if key in self.auths:
                return self.auths[key]
        for key, value in self.auths.items():
            if urlsplit(key if "://" in key else f"//{key}").netloc == host:
                return value
        return None


def parse_docker_config(text: str, origin: str) -> DockerConfig:
    """Read the credentials of a docker config; `auth` is base64 `user:password`."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{origin} is not JSON: {exc.msg} at line {exc.lineno}") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError(f"{origin} has no `auths` object")
    parsed: dict[str, tuple[str, SecretStr]] = {}
    for host, entry in auths.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{origin}: the entry for {host} is not an object")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"{origin}: the `auth` of {host} is not base64") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise ValueError(f"{origin}: the `auth` of {host} is not user:password")
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            username, password = entry["username"], entry["password"]
        else:
            raise ValueError(f"{origin}: the entry for {host} has no `auth` or username/password")
        parsed[host] = (username, SecretStr(password))
    return DockerConfig(origin=origin, auths=parsed)


def secret_from_env(cls: type, value: object, info: ValidationInfo) -> Secret:
    """A field naming an environment variable, read now."""
    if not isinstance(value, str) or not value:
        raise ValueError("name an environment variable")
    environ = _environ(info)
    if value not in environ:
        raise ValueError(f"environment variable {value} is not set")
    return Secret(origin=f"${value}", value=SecretStr(environ[value]))


def secret_from_file(cls: type, value: object, info: ValidationInfo) -> Secret:
    """A field naming a file (relative to the config) that holds a secret, read now."""
    if not isinstance(value, str) or not value:
        raise ValueError("name a file")
    path = base_dir(info) / value
    return Secret(origin=str(path), value=SecretStr(_read_secret_file(path)))


class BasicAuth(Model):
    """A username and a password read from the environment or a file."""

    username: str | None = None
    password_env: Secret | None = None
    password_file: Secret | None = None
    # Present only to refuse them with a clear reason instead of "extra inputs".
    password: None = None
    token: None = None
    _sources: ClassVar[str] = "password_env or password_file"

    @field_validator("password", "token", mode="before")
    @classmethod
    def _no_inline_secret(cls, value: object) -> None:
        raise ValueError(f"secrets may not be written in the config; use {cls._sources}")

    _read_env = field_validator("password_env", mode="before")(secret_from_env)
    _read_file = field_validator("password_file", mode="before")(secret_from_file)

    @model_validator(mode="after")
    def _one_source(self) -> BasicAuth:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env or password_file")
        if not self.username:
            raise ValueError("username is required with password_env or password_file")
        return self

    def pair(self) -> tuple[str, SecretStr]:
        secret = self.password_env or self.password_file
        # _one_source rules out anything else.
        assert secret is not None
        assert self.username
        return self.username, secret.value


class Auth(BasicAuth):
    """Credentials for whatever the registry challenges with: Basic, or a Bearer token."""

    docker_config: DockerConfig | None = None
    _sources: ClassVar[str] = "password_env, password_file or docker_config"

    @field_validator("docker_config", mode="before")
    @classmethod
    def _read_docker_config(cls, value: object, info: ValidationInfo) -> DockerConfig:
        if not isinstance(value, str) or not value:
            raise ValueError("name a docker config file")
        path = base_dir(info) / value
        return parse_docker_config(_read_secret_file(path), str(path))

    @model_validator(mode="after")
    def _one_source(self) -> Auth:
        sources = [self.password_env, self.password_file, self.docker_config]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("give exactly one of password_env, password_file or docker_config")
        if self.docker_config is None and not self.username:
            raise ValueError("username is required with password_env or password_file")
        if self.docker_config is not None and self.username:
            raise ValueError("username comes from docker_config; do not set both")
        return self


def existing_file(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
    """A file named relative to the config file, which must exist."""
    if value is None:
        return None
    path = base_dir(info) / value
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long, a folder not searchable
        raise ValueError(f"file {path} cannot be used: {exc.strerror}") from None
    if not found:
        raise ValueError(f"file {path} does not exist")
    return path


def ca_bundle(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
    """A PEM bundle of CA certificates, named relative to the config; loaded now, so a file
    that is not one is a config error rather than a failure at the first connection."""
    path = existing_file(cls, value, info)
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ValueError(f"file {path} is not a PEM bundle of CA certificates ({reason})") from None
    return path
