"""Parsing manifests, indexes, configs, digests and timestamps as registries write them."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from canary.registry.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    Digester,
    ImageManifest,
    Index,
    ManifestError,
    parse_image_config,
    parse_manifest,
    parse_timestamp,
)

DIGEST = "sha256:" + "ab" * 32


def descriptor(**extra: object) -> dict[str, object]:
    return {"mediaType": "x", "digest": DIGEST, "size": 3, **extra}


class TestTimestamps:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2023-05-01T12:00:00Z", datetime(2023, 5, 1, 12, tzinfo=UTC)),
            ("2023-05-01T12:00:00.123456789Z", datetime(2023, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
            ("2023-05-01T14:00:00+02:00", datetime(2023, 5, 1, 12, tzinfo=UTC)),
            ("2023-05-01T12:00:00.5-01:30", datetime(2023, 5, 1, 13, 30, 0, 500000, tzinfo=UTC)),
            ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ],
    )
    def test_parsed(self, text: str, expected: datetime) -> None:
        """RFC 3339 with nanoseconds and offsets parses to the same instant."""
        assert parse_timestamp(text) == expected

    @pytest.mark.parametrize(
        "text", ["", "yesterday", "2023-05-01", "2023-05-01T12:00:00", "2023-13-01T00:00:00Z"]
    )
    def test_rejected(self, text: str) -> None:
        """Dates without a zone or that are not dates give None, never an exception."""
        assert parse_timestamp(text) is None


class TestManifests:
    def test_docker_list_by_header(self) -> None:
        """A Docker manifest list without mediaType in the body is recognised from the header."""
        body = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    descriptor(platform={"os": "linux", "architecture": "arm", "variant": "v7"})
                ],
            }
        )
        parsed = parse_manifest(body.encode(), DOCKER_LIST + "; charset=utf-8")
        assert isinstance(parsed, Index)
        assert parsed.manifests[0].platform == "linux/arm/v7"

    def test_docker_manifest(self) -> None:
        """A Docker schema2 manifest yields its config and layers."""
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": descriptor(),
                "layers": [descriptor(size=9)],
            }
        )
        parsed = parse_manifest(body.encode(), None)
        assert isinstance(parsed, ImageManifest)
        assert parsed.layers[0].size == 9

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"not json", "not JSON"),
            (b"[]", "not a JSON object"),
            (
                json.dumps({"schemaVersion": 1, "mediaType": DOCKER_MANIFEST}).encode(),
                "schemaVersion",
            ),
            (
                json.dumps(
                    {"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
                ).encode(),
                "schema 1 manifest schemaVersion is not 1",
            ),
            (
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": DOCKER_MANIFEST,
                        "config": descriptor(digest="md5:1"),
                        "layers": [],
                    }
                ).encode(),
                "config has no valid digest",
            ),
            (
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": DOCKER_MANIFEST,
                        "config": descriptor(),
                        "layers": [descriptor(size=-1)],
                    }
                ).encode(),
                "layers[0] has no valid size",
            ),
            (
                json.dumps(
                    {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [5]}
                ).encode(),
                "manifests[0] is not an object",
            ),
        ],
    )
    def test_malformed(self, body: bytes, message: str) -> None:
        """Malformed manifests raise ManifestError saying what is wrong."""
        with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_manifest(body, None)

    def test_config(self) -> None:
        """The config gives `created` and the platform, and says why a date is missing."""
        config = parse_image_config(
            b'{"created": "2023-05-01T12:00:00Z", "os": "linux", "architecture": "amd64"}'
        )
        assert config.created == datetime(2023, 5, 1, 12, tzinfo=UTC)
        assert config.platform == "linux/amd64"
        assert parse_image_config(b'{"created": 5}').created_problem == "`created` is not a string"
        assert parse_image_config(b"{}").created_problem == "the config has no `created` field"


class TestDigester:
    @pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
    def test_incremental(self, algorithm: str) -> None:
        """Chunks hash to the same digest as the whole, for both registered algorithms."""
        data = b"x" * 100_000
        digester = Digester(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")
        for start in range(0, len(data), 4096):
            digester.update(data[start : start + 4096])
        assert digester.matches

    def test_unsupported(self) -> None:
        """Digests of unknown algorithms are refused rather than trusted."""
        with pytest.raises(ManifestError):
            Digester("md5:" + "0" * 32)
