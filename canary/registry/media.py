"""Media types, digests, and parsing of manifests, indexes and image configs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canary.config import DIGEST_RE
from canary.registry import schema1

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# The manifest annotation Helm 3.13+, ORAS and buildx write with the artifact's build date.
CREATED_ANNOTATION = "org.opencontainers.image.created"
# buildx marks the attestation manifests it puts in an index with this annotation.
REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
# containerd's Accept list, with schema 1 after every current type, as containerd 1.x asks for
# it: a registry that holds both serves the current one.
ACCEPT = ", ".join(
    [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, schema1.SIGNED, schema1.UNSIGNED, "*/*"]
)
# Attestation manifests in an index carry this placeholder platform; runtimes skip them.
NOT_A_PLATFORM = "unknown/unknown"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_FRACTION_RE = re.compile(r"\.(\d+)")


def is_non_distributable(media_type: str) -> bool:
    """A layer the registry need not hold (Windows base layers): runtimes fetch it from its
    `urls`. The same prefixes containerd's `IsNonDistributable` tests."""
    return media_type.startswith(
        (
            "application/vnd.oci.image.layer.nondistributable.",
            "application/vnd.docker.image.rootfs.foreign.",
        )
    )


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


def manifest_digest(body: bytes, content_type: str | None, algorithm: str = "sha256") -> str:
    """The digest registries give a manifest: of its body, except for a signed schema 1
    manifest, whose digest is taken over its payload without the signatures."""
    if schema1.may_be_schema1(body, content_type):
        try:
            return digest_of(schema1.payload(body), algorithm)
        except schema1.Schema1Error:
            pass  # not a readable schema 1 signature block: the body is what was signed
    return digest_of(body, algorithm)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int | None  # None only for schema 1 layers, whose manifests give no sizes
    platform: str | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    attestation: bool = False  # an index entry that buildx marked as an attestation manifest

    @property
    def foreign(self) -> bool:
        """A non-distributable layer with `urls`: not the registry's to serve."""
        return is_non_distributable(self.media_type) and bool(self.urls)


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """An image or artifact manifest: schema 2, OCI, or schema 1 (which has no config blob; its
    config is embedded in its history)."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None
    created: str | None = None  # the org.opencontainers.image.created annotation, verbatim
    embedded_config: ImageConfig | None = None  # schema 1: the newest history entry
    # Schema 1: layers its history marks empty, which runtimes never download.
    empty_layers: tuple[Descriptor, ...] = ()


@dataclass(frozen=True, slots=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    created: str | None = None  # the org.opencontainers.image.created annotation, verbatim


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
    urls = raw.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise ManifestError(f"{where} has invalid urls")
    artifact_type = raw.get("artifactType")
    annotations = raw.get("annotations")
    attestation = isinstance(annotations, dict) and (
        annotations.get(REFERENCE_TYPE_ANNOTATION) == "attestation-manifest"
    )
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform,
        urls=tuple(urls),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        attestation=attestation or platform == NOT_A_PLATFORM,
    )


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


def _created(document: dict[str, Any]) -> str | None:
    annotations = document.get("annotations")
    if not isinstance(annotations, dict):
        return None
    created = annotations.get(CREATED_ANNOTATION)
    return created if isinstance(created, str) else None


def _media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("manifest mediaType is not a string")
    if declared:
        return declared
    if document.get("schemaVersion") == 1:
        # Schema 1 bodies declare no type; a signature block tells the two kinds apart.
        return schema1.SIGNED if "signatures" in document else schema1.UNSIGNED
    header = (content_type or "").split(";")[0].strip()
    if header and header != schema1.PLAIN_TEXT:
        return header
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def parse_manifest(body: bytes, content_type: str | None) -> ImageManifest | Index:
    """Parse an image manifest (schema 2, OCI, schema 1) or an index; the body's mediaType wins
    over the header."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = _media_type(document, content_type)
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
        return Index(media_type=media_type, manifests=manifests, created=_created(document))
    if media_type in IMAGE_MANIFESTS:
        if document.get("schemaVersion") != 2:
            raise ManifestError("manifest schemaVersion is not 2")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no layers list")
        artifact_type = document.get("artifactType")
        return ImageManifest(
            media_type=media_type,
            config=_descriptor(document.get("config"), "config"),
            layers=tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)),
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            created=_created(document),
        )
    if media_type in schema1.MEDIA_TYPES:
        return _schema1(document, media_type)
    raise ManifestError(f"unsupported manifest media type {media_type!r}")


def _schema1(document: dict[str, Any], media_type: str) -> ImageManifest:
    """Schema 1: each distinct `fsLayers[].blobSum` once, those the history marks empty apart
    (containerd, Docker and containers/image never download them), and the newest history
    entry's config."""
    if document.get("schemaVersion") != 1:
        raise ManifestError("schema 1 manifest schemaVersion is not 1")
    fs_layers, history = document.get("fsLayers"), document.get("history")
    if not isinstance(fs_layers, list) or not fs_layers:
        raise ManifestError("schema 1 manifest has no fsLayers")
    if not isinstance(history, list) or len(history) != len(fs_layers):
        raise ManifestError("schema 1 manifest has no history entry per layer")
    compatibility = []
    for i, step in enumerate(history):
        text = step.get("v1Compatibility") if isinstance(step, dict) else None
        try:
            parsed = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise ManifestError(f"history[{i}].v1Compatibility is not a JSON object")
        compatibility.append(parsed)
    # As containerd's converter: the first mention of a blob decides whether it is empty.
    layers: dict[str, tuple[Descriptor, bool]] = {}
    for i, entry in enumerate(fs_layers):
        digest = entry.get("blobSum") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise ManifestError(f"fsLayers[{i}] has no valid blobSum")
        if digest not in layers:
            layer = Descriptor(media_type=schema1.LAYER, digest=digest, size=None)
            layers[digest] = (layer, schema1.is_empty_layer(compatibility[i]))
    config = _config_of(compatibility[0])
    architecture = document.get("architecture")
    if config.platform is None and isinstance(architecture, str) and architecture:
        config = ImageConfig(config.created, f"linux/{architecture}", config.created_problem)
    return ImageManifest(
        media_type=media_type,
        config=None,
        layers=tuple(layer for layer, empty in layers.values() if not empty),
        embedded_config=config,
        empty_layers=tuple(layer for layer, empty in layers.values() if empty),
    )


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
    return _config_of(document)


def _config_of(document: dict[str, Any]) -> ImageConfig:
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
