"""Media types, digests, and parsing of manifests, indexes and image configs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canary.config import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
# The Accept list containerd sends, so the registry answers exactly as it does for a runtime.
ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"])

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_FRACTION_RE = re.compile(r"\.(\d+)")


class ManifestError(ValueError):
    """A manifest, index or config body that does not have the documented shape."""


class Digester:
    """An incremental hash for a `sha256:` or `sha512:` digest."""

    def __init__(self, digest: str) -> None:
        algorithm, _, self.expected_hex = digest.partition(":")
        if algorithm not in ("sha256", "sha512") or not DIGEST_RE.match(digest):
            raise ManifestError(f"unsupported digest {digest!r}")
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    @property
    def actual(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    @property
    def matches(self) -> bool:
        return self._hash.hexdigest() == self.expected_hex


def digest_of(body: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None


@dataclass(frozen=True, slots=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _descriptor(raw: object, where: str, platform: str | None = None) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} is not an object")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ManifestError(f"{where} has no valid digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where} has no valid size")
    if not isinstance(media_type, str):
        raise ManifestError(f"{where} has an invalid mediaType")
    return Descriptor(media_type=media_type, digest=digest, size=size, platform=platform)


def _platform(raw: object) -> str | None:
    if not isinstance(raw, dict):
        return None
    os_name, arch, variant = raw.get("os"), raw.get("architecture"), raw.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    return (
        f"{os_name}/{arch}/{variant}"
        if isinstance(variant, str) and variant
        else f"{os_name}/{arch}"
    )


def parse_manifest(body: bytes, content_type: str | None) -> ImageManifest | Index:
    """Parse an image manifest or an index; the body's mediaType wins over the header."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("manifest mediaType is not a string")
    media_type = declared or (content_type or "").split(";")[0].strip()
    if not media_type:
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type in INDEXES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no manifests list")
        manifests = tuple(
            _descriptor(entry, f"manifests[{i}]", _platform(entry.get("platform")))
            if isinstance(entry, dict)
            else _descriptor(entry, f"manifests[{i}]")
            for i, entry in enumerate(entries)
        )
        return Index(media_type=media_type, manifests=manifests)
    if media_type in IMAGE_MANIFESTS:
        if document.get("schemaVersion") != 2:
            raise ManifestError("manifest schemaVersion is not 2")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no layers list")
        return ImageManifest(
            media_type=media_type,
            config=_descriptor(document.get("config"), "config"),
            layers=tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)),
        )
    raise ManifestError(f"unsupported manifest media type {media_type!r}")


@dataclass(frozen=True, slots=True)
class ImageConfig:
    created: datetime | None
    platform: str | None
    created_problem: str | None = None


def parse_image_config(body: bytes) -> ImageConfig:
    """Read `created` (the tag's published date) and the platform from an image config."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"config blob is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("config blob is not a JSON object")
    created, problem = None, None
    raw = document.get("created")
    if raw is None:
        problem = "the config has no `created` field"
    elif not isinstance(raw, str):
        problem = "`created` is not a string"
    else:
        created = parse_timestamp(raw)
        if created is None:
            problem = f"`created` is not an RFC 3339 date: {raw[:40]!r}"
    return ImageConfig(created=created, platform=_platform(document), created_problem=problem)


def parse_timestamp(text: str) -> datetime | None:
    """Parse RFC 3339 as registries write it, including nanosecond fractions."""
    value = text.strip().replace("z", "Z")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    fraction = _FRACTION_RE.search(value)
    if fraction:
        # Python reads at most microseconds; Go writes nanoseconds.
        value = value[: fraction.start()] + "." + fraction.group(1)[:6] + value[fraction.end() :]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
