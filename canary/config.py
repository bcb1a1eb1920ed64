"""The catalog file: pydantic models, load_config(), and ConfigError with dotted locations."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from canary.schema import (
    Auth,
    BasicAuth,
    Duration,
    Model,
    Secret,
    base_dir,
    existing_file,
    secret_from_env,
    secret_from_file,
)

# Reference grammar from distribution's reference package (reference/regexp.go).
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
PROJECT_RE = re.compile(r"^[\w.-]+(?:/[\w.-]+)+$", re.ASCII)
PLATFORM_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_.]+)?$")


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds (dotted location, reason) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: invalid configuration"]
        lines += [f"  {loc}: {reason}" if loc else f"  {reason}" for loc, reason in self.problems]
        return "\n".join(lines)


class BlobCheck(StrEnum):
    """How much of each layer a probe reads: all of it and verified, the first bytes, or a HEAD."""

    GET = "get"
    RANGE = "range"
    HEAD = "head"


def _platforms(value: object) -> object:
    if value == "all":
        return value
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str) or not PLATFORM_RE.fullmatch(item):
                raise ValueError(f"{item!r} is not a platform such as linux/amd64 or linux/arm/v7")
        if not value:
            raise ValueError("list at least one platform, or write `all`")
        return tuple(value)
    raise ValueError("platforms is `all` or a list such as [linux/amd64, linux/arm64]")


Platforms = Annotated[Literal["all"] | tuple[str, ...], BeforeValidator(_platforms)]


class Defaults(Model):
    interval: Duration = 60.0
    timeout: Duration = 30.0
    blob_check: BlobCheck = BlobCheck.GET
    platforms: Platforms = "all"
    # A data-loss outcome is fetched again after this pause before it is reported.
    recheck_delay: Duration = 1.0
    # How often an image whose last pull failed is pulled until it recovers; default interval/4.
    suspect_interval: Duration | None = None
    # Two published dates this close are the same date (sources round differently).
    published_tolerance: Duration = 1.0
    # A published date younger than this is a default, not a real one (catalog images are old).
    min_age: Duration | None = None


class PublishedSource(StrEnum):
    """Where a tag's published date is read: the places users see it."""

    CONFIG = "config"  # the config blob's `created`
    GITLAB_API = "gitlab_api"  # GitLab REST: the tag's `created_at`
    GITLAB_REGISTRY_API = "gitlab_registry_api"  # the registry's /gitlab/v1 tag list


def _gitlab_url(value: object) -> str:
    parts = _http_url(value, "https://gitlab.example.com", "token_env or token_file")
    if parts.query or parts.fragment:
        raise ValueError(f"{_shown(str(value))}: give GitLab's base URL, without a query")
    return str(value).rstrip("/")


class GitLab(Model):
    """The GitLab instance whose REST API serves an environment's tag dates."""

    # Its base URL, with the relative URL root if GitLab has one (the /api/v4 is implied).
    url: Annotated[str, BeforeValidator(_gitlab_url)]
    token_env: Secret | None = None
    token_file: Secret | None = None
    token: None = None  # present only to refuse an inline token with a clear reason
    timeout: Duration = 10.0
    tls_verify: bool = True
    ca_file: Path | None = None

    _read_env = field_validator("token_env", mode="before")(secret_from_env)
    _read_file = field_validator("token_file", mode="before")(secret_from_file)
    _ca_exists = field_validator("ca_file", mode="after")(existing_file)

    @field_validator("token", mode="before")
    @classmethod
    def _no_inline_token(cls, value: object) -> None:
        raise ValueError("secrets may not be written in the config; use token_env or token_file")

    @model_validator(mode="after")
    def _check(self) -> GitLab:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env or token_file")
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file has no use with tls_verify: false")
        return self

    @property
    def secret(self) -> SecretStr:
        token = self.token_env or self.token_file
        assert token is not None  # _check rules out anything else
        return token.value


def _sources(value: object) -> object:
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("list at least one source, such as [config]")
        names = [str(item) for item in value]
        if len(set(names)) != len(names):
            raise ValueError("a source is listed more than once")
        return tuple(value)
    raise ValueError("published_sources is a list such as [config, gitlab_api]")


def _shown(value: str) -> str:
    """A URL as an error message may repeat it: without user info, query or fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "the URL"
    netloc = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path)


def _http_url(value: object, example: str, credentials: str) -> SplitResult:
    """An http(s) URL with a host and a valid port, without credentials (`credentials` says
    where they go instead). Messages never repeat user info or a query: they may be secrets."""
    if not isinstance(value, str):
        raise ValueError(f"url is a string such as {example}")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"{_shown(value)} is not a URL such as {example}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials may not be written in the URL; use {credentials}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{_shown(value)} is not an http(s) URL such as {example}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{_shown(value)} has an invalid port") from None
    return parts


def _registry_url(value: object) -> str:
    parts = _http_url(value, "https://registry.example.com", "auth")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("url is the registry's origin only, without a path (the /v2/ is implied)")
    return f"{parts.scheme}://{parts.netloc}"


class Environment(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    url: Annotated[str, BeforeValidator(_registry_url)]
    auth: Auth | None = None
    tls_verify: bool = True
    ca_file: Path | None = None
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    interval: Duration | None = None
    timeout: Duration | None = None
    published_sources: Annotated[tuple[PublishedSource, ...], BeforeValidator(_sources)] = (
        PublishedSource.CONFIG,
    )
    gitlab: GitLab | None = None

    _ca_exists = field_validator("ca_file", mode="after")(existing_file)

    @model_validator(mode="after")
    def _check(self) -> Environment:
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file has no use with tls_verify: false")
        if PublishedSource.GITLAB_API in self.published_sources and self.gitlab is None:
            raise ValueError("published_sources has gitlab_api: say where GitLab is (gitlab.url)")
        if self.auth and self.auth.docker_config and not self.auth.docker_config.lookup(self.url):
            raise ValueError(
                f"auth.docker_config {self.auth.docker_config.origin} has no entry for "
                f"{urlsplit(self.url).netloc}"
            )
        return self

    def credentials(self) -> tuple[str, SecretStr] | None:
        """The username and password to answer challenges with, if any."""
        if self.auth is None:
            return None
        if self.auth.docker_config is not None:
            return self.auth.docker_config.lookup(self.url)
        return self.auth.pair()


def _pattern(regex: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: object) -> object:
        # fullmatch: `$` alone would let a trailing newline through.
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return BeforeValidator(check)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone, for example 2023-05-01T12:00:00Z")
    return value


class Image(Model):
    repository: Annotated[str, _pattern(REPOSITORY_RE, "repository name")]
    tag: Annotated[str, _pattern(TAG_RE, "tag")]
    digest: Annotated[str | None, _pattern(DIGEST_RE, "digest (sha256:<64 hex>)")] = None
    published: datetime | None = None
    environments: tuple[str, ...] | None = None
    blob_check: BlobCheck | None = None
    platforms: Platforms | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    # The GitLab project that holds the repository; by default the longest path prefix of the
    # repository that GitLab knows as a project.
    gitlab_project: Annotated[str | None, _pattern(PROJECT_RE, "GitLab project path")] = None

    @field_validator("published", mode="after")
    @classmethod
    def _published_aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware(value)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True, slots=True)
class Target:
    """One image of the catalog in one environment, with every setting resolved."""

    environment: Environment
    image: Image
    blob_check: BlobCheck
    platforms: Literal["all"] | tuple[str, ...]
    interval: float
    timeout: float
    recheck_delay: float
    suspect_interval: float
    published_tolerance: float = 1.0
    min_age: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """(environment, repository, tag): what identifies this target in metrics and state."""
        return self.environment.name, self.image.repository, self.image.tag


LogLevel = Literal["debug", "info", "warning", "error"]


def _listen(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("listen is HOST:PORT, such as 127.0.0.1:9321 or [::]:9321")
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT, such as 127.0.0.1:9321 or [::]:9321")
    return value


Listen = Annotated[str, BeforeValidator(_listen)]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an empty host means all


class Daemon(Model):
    """Settings of `registry-canary run`; the command line can override listen and log_level."""

    listen: Listen = "127.0.0.1:9321"
    log_level: LogLevel = "info"
    # After SIGTERM, in-flight pulls get this long to finish before they are cancelled.
    grace_period: Duration = 10.0
    # Where the first sighting of each tag's digest is kept across restarts (a JSON file).
    state_file: Path | None = None

    @field_validator("state_file", mode="after")
    @classmethod
    def _state_dir_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = base_dir(info) / value
        try:
            found = path.parent.is_dir()
        except OSError as exc:
            raise ValueError(f"{path} cannot be used: {exc.strerror}") from None
        if not found:
            raise ValueError(f"the folder of {path} does not exist")
        return path


def _alertmanager_urls(value: object) -> object:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list | tuple) or not urls:
        raise ValueError("url is an Alertmanager URL, or a list of them (one per HA replica)")
    cleaned = []
    for url in urls:
        parts = _http_url(url, "http://alertmanager:9093", "auth")
        if parts.query or parts.fragment:
            shown = _shown(str(url))
            raise ValueError(f"{shown}: give the Alertmanager's base URL, without a query")
        cleaned.append(str(url).rstrip("/"))
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("an Alertmanager URL is listed more than once")
    return tuple(cleaned)


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the alert itself sets; an external label may not override them.
ALERT_LABELS = frozenset({"alertname", "environment", "repository", "severity"})


def _external_labels(value: object) -> object:
    if not isinstance(value, dict):
        raise ValueError("external_labels maps label names to values")
    for name, label in value.items():
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a valid Prometheus label name")
        if name in ALERT_LABELS:
            raise ValueError(f"{name!r} is set by the alert itself")
        if not isinstance(label, str) or not label:
            raise ValueError(f"the value of {name!r} must be a non-empty string")
    return value


class Alertmanager(Model):
    """Where the daemon posts its own alerts (API v2), independent of Prometheus."""

    url: Annotated[tuple[str, ...], BeforeValidator(_alertmanager_urls)]
    # Firing alerts are posted again this often; each expires after 3 of these if not renewed.
    resend_interval: Duration = 60.0
    timeout: Duration = 10.0
    auth: BasicAuth | None = None
    tls_verify: bool = True
    ca_file: Path | None = None

    _ca_exists = field_validator("ca_file", mode="after")(existing_file)

    @field_validator("resend_interval", mode="after")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("resend_interval is at least 1s")
        return value

    @model_validator(mode="after")
    def _check(self) -> Alertmanager:
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError("ca_file has no use with tls_verify: false")
        return self


class Alerting(Model):
    alertmanager: Alertmanager | None = None
    # Set these to Prometheus's external_labels, so that Alertmanager sees the daemon's alert
    # and the rule's as one.
    external_labels: Annotated[dict[str, str], BeforeValidator(_external_labels)] = Field(
        default_factory=dict
    )
    # The "source" link of each alert, such as the canary's status page as users reach it.
    generator_url: str | None = None


class Config(Model):
    daemon: Daemon = Daemon()
    alerting: Alerting = Alerting()
    defaults: Defaults = Defaults()
    environments: tuple[Environment, ...]
    images: tuple[Image, ...]

    @field_validator("environments", "images", mode="after")
    @classmethod
    def _not_empty(cls, value: tuple[object, ...], info: ValidationInfo) -> tuple[object, ...]:
        # A length constraint would also fire when items fail, adding a confusing second error.
        if not value:
            raise ValueError(f"list at least one of the {info.field_name}")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        problems: list[str] = []
        names = [env.name for env in self.environments]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"environment name {name!r} is used more than once")
        refs = [image.reference for image in self.images]
        for ref in sorted({r for r in refs if refs.count(r) > 1}):
            problems.append(f"image {ref} is listed more than once")
        for image in self.images:
            for name in image.environments or ():
                if name not in names:
                    problems.append(f"image {image.reference} names unknown environment {name!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)

    def targets(self, environments: tuple[str, ...] = ()) -> Iterator[Target]:
        """Every (environment, image) pair to probe, in catalog order, optionally limited."""
        for env in self.environments:
            if environments and env.name not in environments:
                continue
            for image in self.images:
                if image.environments is not None and env.name not in image.environments:
                    continue
                interval = image.interval or env.interval or self.defaults.interval
                yield Target(
                    environment=env,
                    image=image,
                    blob_check=image.blob_check or self.defaults.blob_check,
                    platforms=image.platforms or self.defaults.platforms,
                    interval=interval,
                    timeout=image.timeout or env.timeout or self.defaults.timeout,
                    recheck_delay=self.defaults.recheck_delay,
                    suspect_interval=min(self.defaults.suspect_interval or interval / 4, interval),
                    published_tolerance=self.defaults.published_tolerance,
                    min_age=self.defaults.min_age,
                )


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, so pydantic alone decides how they parse."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _location(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_config(
    document: Any, source: str, environ: Mapping[str, str] | None = None, base_dir: Path = Path()
) -> Config:
    """Validate a parsed YAML document; secrets named in it are read now."""
    if not isinstance(document, dict):
        raise ConfigError(
            source, [("", "the top level must be a mapping with environments and images")]
        )
    context = {"environ": os.environ if environ is None else environ, "base_dir": base_dir}
    try:
        return Config.model_validate(document, context=context)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            message = _MESSAGES.get(error["type"], error["msg"])
            message = message.removeprefix("Value error, ")
            problems.append((_location(error["loc"]), message))
        raise ConfigError(source, problems) from None


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a config file, or raise ConfigError saying every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}"
        raise ConfigError(str(path), [(where, "not UTF-8 text")]) from None
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [(where, f"not valid YAML: {problem}")]) from None
    return parse_config(document, str(path), environ, base_dir=path.parent)
