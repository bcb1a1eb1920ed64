"""Property-based tests: arbitrary input to the config loader and the registry parsers yields a
result or the module's documented error, never an unexpected exception."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from canary.config import DIGEST_RE, REPOSITORY_RE, TAG_RE, Config, ConfigError, load_config
from canary.config import parse_config as _parse_config
from canary.registry.auth import Challenge, parse_www_authenticate
from canary.registry.errors import outcome_for_response, parse_error_body, safe_url
from canary.registry.media import (
    Digester,
    ImageConfig,
    ImageManifest,
    Index,
    ManifestError,
    digest_of,
    parse_image_config,
    parse_manifest,
    parse_timestamp,
)
from canary.results import Fetch, Hop, Outcome
from canary.schema import MAX_DURATION_SECONDS, parse_duration

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------------

CONFIG_KEYS = [
    "daemon", "alerting", "defaults", "environments", "images", "name", "url", "auth",
    "tls_verify", "ca_file", "concurrency", "interval", "timeout", "published_sources", "gitlab",
    "username", "password_env", "password_file", "password", "token", "docker_config",
    "token_env", "token_file", "repository", "tag", "digest", "published", "platforms",
    "blob_check", "gitlab_project", "listen", "log_level", "grace_period", "state_file",
    "alertmanager", "external_labels", "generator_url", "resend_interval", "recheck_delay",
    "suspect_interval", "published_tolerance", "min_age", "foreign_layers", "referrers",
    "require", "enabled",
]  # fmt: skip
PLAUSIBLE = [
    "http://127.0.0.1:5000", "https://registry.example.com", "ftp://x", "http://", "http://h:0",
    "http://h:99999", "http://[::1", "canary/app", "v1", "all", "linux/amd64", "get", "head",
    "range", "30s", "500ms", "0s", "1h", "-1s", "2023-05-01T12:00:00Z", "2023-05-01",
    "127.0.0.1:9321", "debug", "config", "gitlab_api", "CANARY_X", "", " ", "\x00", "a" * 200,
    "sha256:" + "a" * 64,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(PLAUSIBLE),
)
keys = st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=10))
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


value = st.one_of(scalars, json_like)
environment = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["local", "prod", "a-b.c"]), value), "url": value},
    optional={
        key: value
        for key in (
            "auth",
            "tls_verify",
            "ca_file",
            "concurrency",
            "interval",
            "timeout",
            "published_sources",
            "gitlab",
        )
    },
)
image = st.fixed_dictionaries(
    {"repository": value, "tag": value},
    optional={
        key: value
        for key in (
            "digest",
            "published",
            "environments",
            "blob_check",
            "platforms",
            "interval",
            "timeout",
            "gitlab_project",
            "published_sources",
            "foreign_layers",
            "referrers",
        )
    },
)
# Shaped like a config, with every leaf arbitrary: gets past the top level into the models.
config_like = st.fixed_dictionaries(
    {
        "environments": st.one_of(st.lists(environment, max_size=3), value),
        "images": st.one_of(st.lists(image, max_size=3), value),
    },
    optional={
        "defaults": st.one_of(
            _optional(
                interval=value,
                timeout=value,
                platforms=value,
                foreign_layers=value,
                referrers=st.one_of(_optional(require=value, enabled=value), value),
            ),
            value,
        ),
        "daemon": st.one_of(_optional(listen=value, log_level=value, state_file=value), value),
        "alerting": st.one_of(
            _optional(
                alertmanager=st.one_of(_optional(url=value, auth=value, resend_interval=value)),
                external_labels=value,
            ),
            value,
        ),
    },
)
VALID_DOCUMENT: dict[str, Any] = {
    "environments": [{"name": "local", "url": "http://127.0.0.1:5000"}],
    "images": [{"repository": "canary/app", "tag": "v1"}],
}
YAML_PIECES = [
    "environments:", "images:", "\n", "  ", "- ", "name: local", "url: http://r", "repository: a",
    "tag: v1", "&a ", "*a", "[", "]", "{", "}", "? ", ": ", ",", "!!python/object:os.system ",
    "!!binary ", "!!set ", "'", '"', "\t", "%YAML 1.1\n", "---\n", "...\n", "|\n", ">\n", "# x",
    "<<: *a", "interval: 5s", ".inf", "~", "0x1F", "1e3",
]  # fmt: skip
yaml_like = st.lists(st.sampled_from(YAML_PIECES), max_size=25).map("".join)
HEADER_PIECES = [
    "Bearer", "Basic", "bearer", " ", ",", "=", '"', "\\", "realm", "service", "scope",
    '"https://auth.example/token"', "repository:a/b:pull", "\t", "error", "invalid_token", "x=y",
]  # fmt: skip
header_like = st.lists(st.sampled_from(HEADER_PIECES), max_size=30).map("".join)
digest_like = st.one_of(
    st.from_regex(DIGEST_RE),
    st.text(max_size=80),
    st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(["sha256", "sha512", "md5", ""]),
              st.text("0123456789abcdefABCDEF\n", max_size=130)),
)  # fmt: skip
descriptor = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": value,
        "digest": st.one_of(digest_like, value),
        "size": st.one_of(st.integers(), value),
        "platform": st.one_of(_optional(os=value, architecture=value, variant=value), value),
    },
)
manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.one_of(st.just(2), value),
        "mediaType": st.one_of(
            st.sampled_from(
                [
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                ]
            ),
            st.text(max_size=20),
        ),
        "config": st.one_of(descriptor, value),
        "layers": st.one_of(st.lists(descriptor, max_size=3), value),
        "manifests": st.one_of(st.lists(descriptor, max_size=3), value),
    },
)
content_types = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "application/vnd.oci.image.index.v1+json; charset=utf-8",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    ),
)


def parse_config(document: Any) -> Config:
    return _parse_config(document, "x", environ={})


def accepted(document: Any) -> Config | None:
    """The Config for `document`, or None if it raised ConfigError (anything else propagates)."""
    try:
        return parse_config(document)
    except ConfigError as exc:
        caught = exc
    assert caught.problems, "a ConfigError names at least one problem"
    assert all(isinstance(reason, str) and reason for _, reason in caught.problems)
    return None


# --- the config loader ------------------------------------------------------------------------


class TestConfigLoader:
    @PROPERTY
    @given(json_like)
    def test_arbitrary_documents(self, document: Any) -> None:
        """Any JSON-like document yields a Config or a ConfigError with problems."""
        accepted(document)

    @PROPERTY
    @given(config_like)
    def test_config_shaped_documents(self, document: dict[str, Any]) -> None:
        """A document shaped like a config with arbitrary leaves yields Config or ConfigError,
        and an accepted one resolves its targets."""
        config = accepted(document)
        if config is not None:
            for target in config.targets():
                assert target.interval > 0
                assert target.timeout > 0

    @PROPERTY
    @given(st.one_of(st.text(), yaml_like))
    def test_load_config_on_text_files(self, text: str) -> None:
        """Any text file, YAML-like or not, loads to a Config or raises ConfigError."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "canary.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            try:
                load_config(path, environ={})
            except ConfigError as exc:
                problems, source = exc.problems, exc.source
            else:
                return
        assert problems
        assert source == str(path)

    @PROPERTY
    @given(st.binary(max_size=200))
    @example(b"environments: []\n\xff\xfe\n")
    def test_load_config_on_arbitrary_bytes(self, data: bytes) -> None:
        """Any file, even one that is not UTF-8, loads to a Config or raises ConfigError."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "canary.yaml"
            path.write_bytes(data)
            try:
                load_config(path, environ={})
            except ConfigError as exc:
                problems = exc.problems
            else:
                return
        assert problems

    @PROPERTY
    @given(st.text(max_size=80), st.text(max_size=140), st.one_of(st.none(), digest_like))
    @example("canary/app", "v1", "sha256:" + "a" * 64)
    def test_references_accepted_only_when_valid(
        self, repository: str, tag: str, digest: str | None
    ) -> None:
        """An image's repository, tag and digest are accepted exactly when their grammar
        matches the whole value."""
        entry: dict[str, Any] = {"repository": repository, "tag": tag}
        if digest is not None:
            entry["digest"] = digest
        config = accepted({**VALID_DOCUMENT, "images": [entry]})
        valid = (
            REPOSITORY_RE.fullmatch(repository) is not None
            and TAG_RE.fullmatch(tag) is not None
            and (digest is None or DIGEST_RE.fullmatch(digest) is not None)
        )
        if config is not None and not valid:
            pytest.fail(f"accepted an invalid reference: {entry!r}")
        # A valid reference may still be refused for another reason only if it has none here.
        if valid:
            assert config is not None

    @PROPERTY
    @given(st.sampled_from(["repository", "tag", "digest"]))
    def test_trailing_newline_refused(self, field: str) -> None:
        """A reference with a trailing newline is refused."""
        entry = {"repository": "canary/app", "tag": "v1", "digest": "sha256:" + "a" * 64}
        entry[field] += "\n"
        assert accepted({**VALID_DOCUMENT, "images": [entry]}) is None

    @PROPERTY
    @given(st.text(min_size=1, max_size=20))
    @example("caf\u00e9")
    def test_accepted_tags_are_ascii(self, tag: str) -> None:
        """Every tag the config accepts is in distribution's ASCII tag grammar."""
        entry = {"repository": "canary/app", "tag": tag}
        if accepted({**VALID_DOCUMENT, "images": [entry]}) is not None:
            assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag

    @pytest.mark.parametrize("where", ["environment", "gitlab", "alertmanager", "state_file"])
    def test_unusable_file_names(self, where: str) -> None:
        """A file name the OS refuses (too long) is a ConfigError, wherever it is named."""
        long = "a" * 300
        document: dict[str, Any] = json.loads(json.dumps(VALID_DOCUMENT))
        environment = document["environments"][0]
        if where == "environment":
            environment["ca_file"] = long
        elif where == "gitlab":
            environment["gitlab"] = {"url": "http://g", "token_env": "T", "ca_file": long}
        elif where == "alertmanager":
            document["alerting"] = {"alertmanager": {"url": "http://am", "ca_file": long}}
        else:
            document["daemon"] = {"state_file": f"{long}/state.json"}
        with pytest.raises(ConfigError):
            _parse_config(document, "x", environ={"T": "t"})

    @PROPERTY
    @given(st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{1,3})?(ms|s|m|h)\Z"))
    @example("99999999999h")
    def test_accepted_durations_fit_a_timedelta(self, text: str) -> None:
        """Every duration the config accepts can be scheduled (fits a timedelta)."""
        config = accepted({**VALID_DOCUMENT, "defaults": {"interval": text}})
        if config is not None:
            timedelta(seconds=config.defaults.interval)


class TestDuration:
    @PROPERTY
    @given(
        st.one_of(
            st.integers(min_value=1, max_value=10**6).map(str),
            st.decimals(min_value="0.001", max_value="100000", places=3).map(str),
        ),
        st.sampled_from([("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]),
    )
    def test_round_trip(self, number: str, unit: tuple[str, float]) -> None:
        """parse_duration of `<number><unit>` is the number times the unit, in seconds, up to
        the longest duration (30 days); longer is refused with that reason."""
        suffix, factor = unit
        seconds = float(number) * factor
        if seconds > MAX_DURATION_SECONDS:
            with pytest.raises(ValueError, match="longer than the longest duration"):
                parse_duration(f"{number}{suffix}")
        else:
            assert parse_duration(f"{number}{suffix}") == pytest.approx(seconds)

    @PROPERTY
    @given(st.one_of(st.text(max_size=30), scalars))
    def test_arbitrary_values(self, raw: object) -> None:
        """Anything is a positive number of seconds or a ValueError with a message."""
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            message = str(exc)
        else:
            assert seconds > 0
            return
        assert message


# --- WWW-Authenticate -------------------------------------------------------------------------


class TestWwwAuthenticate:
    @PROPERTY
    @given(st.one_of(st.text(), header_like))
    def test_never_raises(self, header: str) -> None:
        """Any header value parses to a list of challenges with lower-case schemes and keys."""
        challenges = parse_www_authenticate(header)
        assert isinstance(challenges, list)
        for challenge in challenges:
            assert isinstance(challenge, Challenge)
            assert challenge.scheme == challenge.scheme.lower()
            assert challenge.scheme
            assert all(key == key.lower() for key in challenge.params)
            assert all(isinstance(v, str) for v in challenge.params.values())

    @PROPERTY
    @given(
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        st.dictionaries(
            st.sampled_from(["realm", "service", "scope", "error"]),
            st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=40),
            min_size=1,
        ),
    )
    def test_round_trip(self, scheme: str, params: dict[str, str]) -> None:
        """A Bearer challenge with quoted (and escaped) parameters parses back to them."""

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        header = scheme + " " + ",".join(f"{k}={quote(v)}" for k, v in params.items())
        assert parse_www_authenticate(header) == [Challenge("bearer", params)]


# --- manifests, indexes, configs and digests --------------------------------------------------


def _parsed_or_manifest_error(body: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_manifest(body, content_type)
    except ManifestError as exc:
        message = str(exc)
        assert message
        return
    assert isinstance(parsed, ImageManifest | Index)
    descriptors = parsed.manifests if isinstance(parsed, Index) else parsed.layers
    for item in descriptors:
        assert DIGEST_RE.match(item.digest)
        assert item.size >= 0


class TestManifests:
    @PROPERTY
    @given(st.binary(max_size=300), content_types)
    def test_arbitrary_bytes(self, body: bytes, content_type: str | None) -> None:
        """Arbitrary bytes are a parsed manifest or index, or ManifestError."""
        _parsed_or_manifest_error(body, content_type)

    @PROPERTY
    @given(st.one_of(json_like, st.lists(descriptor)), content_types)
    def test_arbitrary_json(self, document: Any, content_type: str | None) -> None:
        """Arbitrary JSON values are a parsed manifest or index, or ManifestError."""
        _parsed_or_manifest_error(json.dumps(document).encode(), content_type)

    @PROPERTY
    @given(manifest_like, content_types)
    @example({"mediaType": [1]}, None)
    def test_manifest_shaped_json(self, document: dict[str, Any], content_type: str | None) -> None:
        """A manifest-shaped document with arbitrary fields parses or raises ManifestError."""
        _parsed_or_manifest_error(json.dumps(document).encode(), content_type)

    @pytest.mark.parametrize(
        "parse",
        [
            lambda body: parse_manifest(body, None),
            parse_image_config,
            parse_error_body,
        ],
        ids=["parse_manifest", "parse_image_config", "parse_error_body"],
    )
    def test_deep_nesting(self, parse: Any) -> None:
        """A body of 64 Ki nested arrays is a ManifestError or "no error code", not a crash."""
        with contextlib.suppress(ManifestError):
            parse(b"[" * 65536)

    @PROPERTY
    @given(st.one_of(st.binary(max_size=200), json_like.map(lambda d: json.dumps(d).encode())))
    def test_image_config(self, body: bytes) -> None:
        """An image config body is parsed (with a date or a stated problem) or ManifestError."""
        try:
            parsed = parse_image_config(body)
        except ManifestError:
            return
        assert isinstance(parsed, ImageConfig)
        assert (parsed.created is None) == (parsed.created_problem is not None)

    @PROPERTY
    @given(st.text(max_size=60))
    def test_timestamps(self, text: str) -> None:
        """Any text is an aware datetime or None."""
        parsed = parse_timestamp(text)
        assert parsed is None or parsed.tzinfo is not None

    @PROPERTY
    @given(st.datetimes(timezones=st.just(UTC)))
    def test_timestamp_round_trip(self, moment: datetime) -> None:
        """An RFC 3339 rendering of an aware time parses back to the same instant."""
        text = moment.isoformat().replace("+00:00", "Z")
        assert parse_timestamp(text) == moment

    @PROPERTY
    @given(digest_like)
    def test_digester_accepts_only_digests(self, digest: str) -> None:
        """Digester takes a well-formed sha256/sha512 digest or raises ManifestError."""
        assume(not digest.endswith("\n"))  # see test_trailing_newline_refused
        try:
            Digester(digest)
        except ManifestError:
            assert not DIGEST_RE.fullmatch(digest)
        else:
            assert DIGEST_RE.fullmatch(digest)

    @PROPERTY
    @given(st.binary(max_size=500), st.sampled_from(["sha256", "sha512"]))
    def test_digest_round_trip(self, body: bytes, algorithm: str) -> None:
        """The digest of a body verifies that body, and no other."""
        digest = digest_of(body, algorithm)
        assert DIGEST_RE.fullmatch(digest)
        digester = Digester(digest)
        digester.update(body)
        assert digester.matches
        assert digester.actual == digest
        other = Digester(digest)
        other.update(body + b"x")
        assert not other.matches


# --- error bodies -----------------------------------------------------------------------------

error_documents = st.fixed_dictionaries(
    {"errors": st.one_of(
        st.lists(
            _optional(code=st.one_of(st.sampled_from(
                ["BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "DENIED", "UNAUTHORIZED", "TOOMANYREQUESTS",
                 "UNAVAILABLE", "NAME_UNKNOWN", "x"]), value), message=value, detail=value),
            max_size=3,
        ),
        value,
    )}
).map(lambda d: json.dumps(d).encode())  # fmt: skip
bodies = st.one_of(st.none(), st.binary(max_size=200), error_documents)
urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{path}{query}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["127.0.0.1:5000", "registry.example.com", "[::1]:443", "u:p@cdn.example"]),
    st.text(st.characters(codec="ascii", exclude_characters="?#"), max_size=20),
    st.sampled_from(["", "?X-Amz-Signature=secret", "#frag"]),
)


class TestErrorBodies:
    @PROPERTY
    @given(bodies)
    def test_parse_error_body(self, body: bytes | None) -> None:
        """Any body gives (code, message, detail), each a short string or None."""
        for part in parse_error_body(body or b""):
            assert part is None or (isinstance(part, str) and len(part) <= 300)

    @PROPERTY
    @given(
        st.one_of(st.integers(min_value=100, max_value=599), st.integers()),
        st.dictionaries(
            st.sampled_from(["X-Request-Id", "CF-Ray", "Content-Type", "X-Other"]),
            st.text(max_size=400),
        ),
        bodies,
        st.sampled_from(["manifest", "blob", "other"]),
        st.sampled_from(list(Hop)),
        urls,
    )
    def test_outcome_for_response(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes | None,
        subject: Any,
        hop: Hop,
        url: str,
    ) -> None:
        """Any status, headers and body classify into an Outcome of the closed set (never ok),
        with evidence whose URL has no credentials or query."""
        fetch = outcome_for_response(status, headers, body, subject=subject, hop=hop, url=url)
        assert isinstance(fetch, Fetch)
        assert fetch.outcome in set(Outcome)
        assert fetch.outcome is not Outcome.OK
        assert fetch.status == status
        assert fetch.hop is hop
        assert fetch.evidence is not None
        assert "secret" not in fetch.evidence.url
        assert "u:p@" not in fetch.evidence.url
        assert fetch.evidence.request_id is None or len(fetch.evidence.request_id) <= 300

    @PROPERTY
    @given(st.one_of(st.text(max_size=40), urls))
    @example("http://registry.example.com:99999/v2/")
    def test_safe_url_never_raises(self, url: str) -> None:
        """safe_url of any text is a string without query, fragment or user info."""
        cleaned = safe_url(url)
        assert "?" not in cleaned
        assert "#" not in cleaned
        assert "@" not in urlsplit(cleaned).netloc
