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
from urllib.parse import urlsplit

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

from canary.pull_options import ForeignLayers, Referrers
from canary.schema import (
    Auth,
    ByteSize,
    Duration,
    Model,
    base_dir,
    ca_bundle,
)
from canary.servers import Alerting, GitLab, http_url

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
    # HEAD every layer every round; full verified downloads rotate within `budget`.
    BUDGET = "budget"


def _pattern(regex: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: object) -> object:
        # fullmatch: `$` alone would let a trailing newline through.
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return BeforeValidator(check)


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


class Budget(Model):
    """How many layer bytes an environment may download for full verification, and how stale a
    full verification may get; every other layer fetch of a round is a HEAD."""

    bytes_per_hour: ByteSize
    full_verify_within: Duration = 86400.0


class Control(Model):
    """A repository the canary may write to: each round it pushes a fresh image, pulls it back
    and deletes it, to tell "old data unreadable" from "registry broken"."""

    repository: Annotated[str, _pattern(REPOSITORY_RE, "repository name")]
    interval: Duration | None = None  # default: the environment's interval
    timeout: Duration | None = None  # default: the environment's timeout


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
    # For blob_check: budget, unless the environment sets its own.
    budget: Budget | None = None
    foreign_layers: ForeignLayers = ForeignLayers.SKIP
    referrers: Referrers | None = None


class PublishedSource(StrEnum):
    """Where a tag's published date is read: the places users see it."""

    CONFIG = "config"  # the config blob's `created`
    GITLAB_API = "gitlab_api"  # GitLab REST: the tag's `created_at`
    GITLAB_REGISTRY_API = "gitlab_registry_api"  # the registry's /gitlab/v1 tag list


def _sources(value: object) -> object:
    # An empty list is allowed: it means "do not judge the published date".
    if isinstance(value, list | tuple):
        names = [str(item) for item in value]
        if len(set(names)) != len(names):
            raise ValueError("a source is listed more than once")
        return tuple(value)
    raise ValueError("published_sources is a list such as [config, gitlab_api]")


Sources = Annotated[tuple[PublishedSource, ...], BeforeValidator(_sources)]


def _registry_url(value: object) -> str:
    parts = http_url(value, "https://registry.example.com", "auth")
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
    published_sources: Sources = (PublishedSource.CONFIG,)
    gitlab: GitLab | None = None
    control: Control | None = None
    budget: Budget | None = None

    _ca_exists = field_validator("ca_file", mode="after")(ca_bundle)

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
    # Instead of the environment's; [] means "do not judge this entry's date" (artifacts
    # without one).
    published_sources: Sources | None = None
    foreign_layers: ForeignLayers | None = None
    referrers: Referrers | None = None

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
    budget: Budget | None = None
    published_sources: tuple[PublishedSource, ...] = (PublishedSource.CONFIG,)
    foreign_layers: ForeignLayers = ForeignLayers.SKIP
    referrers: Referrers | None = None  # None: referrers are not checked

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
                referrers = image.referrers or self.defaults.referrers
                sources = image.published_sources
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
                    budget=env.budget or self.defaults.budget,
                    published_sources=env.published_sources if sources is None else sources,
                    foreign_layers=image.foreign_layers or self.defaults.foreign_layers,
                    referrers=referrers if referrers is not None and referrers.enabled else None,
                )

    def budget_settings(self, environment: Environment) -> tuple[Budget, float] | None:
        """(settings, cycle) of the environment's byte budget, the cycle being the longest
        interval of its budgeted images; None when it has none."""
        budgeted = [
            t for t in self.targets((environment.name,)) if t.blob_check is BlobCheck.BUDGET
        ]
        settings = environment.budget or self.defaults.budget
        if not budgeted or settings is None:
            return None
        return settings, max(t.interval for t in budgeted)

    def control_settings(self, environment: Environment) -> tuple[float, float] | None:
        """(interval, timeout) of the environment's control probe, or None when it has none."""
        control = environment.control
        if control is None:
            return None
        interval = control.interval or environment.interval or self.defaults.interval
        timeout = control.timeout or environment.timeout or self.defaults.timeout
        return interval, timeout


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
        config = Config.model_validate(document, context=context)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            message = _MESSAGES.get(error["type"], error["msg"])
            message = message.removeprefix("Value error, ")
            problems.append((_location(error["loc"]), message))
        raise ConfigError(source, problems) from None
    problems = _placement_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def _placement_problems(config: Config) -> list[tuple[str, str]]:
    """Rules that span environments and images, each said at the key to change."""
    problems = []
    for position, env in enumerate(config.environments):
        images = [t.image for t in config.targets((env.name,))]
        for image in images:
            if env.gitlab is None and PublishedSource.GITLAB_API in (image.published_sources or ()):
                problems.append(
                    (
                        f"images.{config.images.index(image)}.published_sources",
                        f"gitlab_api needs a GitLab for environment {env.name} "
                        f"(environments.{position}.gitlab.url)",
                    )
                )
        control = env.control
        if control is not None and any(i.repository == control.repository for i in images):
            problems.append(
                (
                    f"environments.{position}.control.repository",
                    f"{control.repository} holds catalog images; the control probe writes and "
                    "deletes, so give it a repository of its own",
                )
            )
        budgeted = [i for i in images if (i.blob_check or config.defaults.blob_check) == "budget"]
        if budgeted and env.budget is None and config.defaults.budget is None:
            image = budgeted[0]
            where = (
                f"images.{config.images.index(image)}.blob_check"
                if image.blob_check
                else "defaults.blob_check"
            )
            problems.append(
                (
                    where,
                    f"budget needs bytes_per_hour: set environments.{position}.budget or "
                    "defaults.budget",
                )
            )
    return problems


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
