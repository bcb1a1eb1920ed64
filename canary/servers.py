"""Config models of the servers the canary reports to or reads from besides registries (GitLab,
Alertmanager), and the URL checks every server's address passes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from canary.schema import (
    BasicAuth,
    Duration,
    Model,
    Secret,
    ca_bundle,
    secret_from_env,
    secret_from_file,
)


def _shown(value: str) -> str:
    """A URL as an error message may repeat it: without user info, query or fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "the URL"
    netloc = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path)


def http_url(value: object, example: str, credentials: str) -> SplitResult:
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


def _gitlab_url(value: object) -> str:
    parts = http_url(value, "https://gitlab.example.com", "token_env or token_file")
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
    _ca_exists = field_validator("ca_file", mode="after")(ca_bundle)

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


def _alertmanager_urls(value: object) -> object:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list | tuple) or not urls:
        raise ValueError("url is an Alertmanager URL, or a list of them (one per HA replica)")
    cleaned = []
    for url in urls:
        parts = http_url(url, "http://alertmanager:9093", "auth")
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
    # Firing alerts are posted again this often; each expires after 4 of these if not renewed.
    resend_interval: Duration = 60.0
    timeout: Duration = 10.0
    auth: BasicAuth | None = None
    tls_verify: bool = True
    ca_file: Path | None = None

    _ca_exists = field_validator("ca_file", mode="after")(ca_bundle)

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
