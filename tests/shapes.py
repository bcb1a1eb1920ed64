"""Hand-written registry data of every shape a long-lived registry holds, and a plain-HTTP pusher
for it: schema 1 (signed and unsigned), foreign layers, artifacts, nested indexes, cosign and
OCI 1.1 referrers.

Nothing here imports `canary`: media types and the schema 1 signature format are spelled out
from the specifications (distribution's schema 1 docs, libtrust's JWS "pretty" form, the OCI
image and distribution specs, cosign's tag convention), so the canary is checked against them
rather than against itself.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
SPDX = "application/spdx+json"
CREATED = "org.opencontainers.image.created"
# The empty layer schema 1 repeats for every history step without a filesystem change: an
# empty tar archive (two zero blocks), gzipped.
EMPTY_GZIP_TAR = gzip.compress(bytes(1024), mtime=0)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass(frozen=True)
class Manifest:
    """A manifest body with what a registry needs first: its blobs and child manifests."""

    body: bytes
    media_type: str
    blobs: tuple[Blob, ...] = ()
    children: tuple[Manifest, ...] = ()
    # The digest registries give it, when not that of the body (signed schema 1).
    canonical: bytes | None = None

    @property
    def digest(self) -> str:
        return sha256(self.canonical if self.canonical is not None else self.body)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.body),
            **extra,
        }


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def image(
    label: str,
    *,
    layers: int = 2,
    created: str | None = "2019-03-04T05:06:07Z",
    platform: tuple[str, str] = ("linux", "amd64"),
    media_type: str = OCI_MANIFEST,
    extra_layers: Sequence[dict[str, Any]] = (),
) -> Manifest:
    """An image manifest whose config and layers depend only on `label`."""
    config_document: dict[str, Any] = {"os": platform[0], "architecture": platform[1]}
    if created is not None:
        config_document["created"] = created
    docker = media_type == DOCKER_MANIFEST
    config = Blob(_json(config_document), DOCKER_CONFIG if docker else OCI_CONFIG)
    blobs = [
        Blob(
            hashlib.shake_256(f"{label}/{i}".encode()).digest(2000 + i),
            DOCKER_LAYER if docker else OCI_LAYER_GZIP,
        )
        for i in range(layers)
    ]
    body = _json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.descriptor(),
            "layers": [blob.descriptor() for blob in blobs] + list(extra_layers),
        }
    )
    return Manifest(body, media_type, (config, *blobs))


def foreign_image(
    label: str, foreign: Blob, urls: Sequence[str], *, docker: bool = True
) -> Manifest:
    """An image with one layer of its own and a foreign (non-distributable) base layer that
    the registry does not hold, as Windows base images have."""
    kind = DOCKER_FOREIGN if docker else OCI_NONDISTRIBUTABLE
    described = Blob(foreign.data, kind).descriptor(urls=list(urls))
    return image(
        label,
        layers=1,
        media_type=DOCKER_MANIFEST if docker else OCI_MANIFEST,
        extra_layers=[described],
        platform=("windows", "amd64"),
    )


def index(
    entries: Sequence[tuple[Manifest, dict[str, Any] | None]], **annotations: str
) -> Manifest:
    """An OCI index of `entries`, each with its platform object, or none."""
    manifests = []
    for child, platform in entries:
        extra: dict[str, Any] = {"platform": platform} if platform is not None else {}
        manifests.append(child.descriptor(**extra))
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    if annotations:
        document["annotations"] = dict(annotations)
    return Manifest(_json(document), OCI_INDEX, children=tuple(child for child, _ in entries))


def attestation(for_image: Manifest) -> tuple[Manifest, dict[str, Any]]:
    """A buildx attestation manifest and the index entry's extras that mark it."""
    statement = Blob(
        b'{"_type":"https://in-toto.io/Statement/v0.1"}', "application/vnd.in-toto+json"
    )
    config = Blob(b"{}", OCI_CONFIG)
    body = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [statement.descriptor()],
        }
    )
    manifest = Manifest(body, OCI_MANIFEST, (config, statement))
    return manifest, {
        "annotations": {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": for_image.digest,
        }
    }


def artifact(
    label: str,
    *,
    config_type: str = OCI_EMPTY,
    config_data: bytes = b"{}",
    layer_type: str = HELM_CHART,
    artifact_type: str | None = None,
    created: str | None = None,
    subject: Manifest | None = None,
) -> Manifest:
    """An OCI artifact manifest: a non-image config (empty by default) and one layer."""
    config = Blob(config_data, config_type)
    layer = Blob(hashlib.shake_256(label.encode()).digest(700), layer_type)
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if created is not None:
        document["annotations"] = {CREATED: created}
    if subject is not None:
        document["subject"] = subject.descriptor()
    return Manifest(_json(document), OCI_MANIFEST, (config, layer))


def cosign_signature(subject: Manifest) -> Manifest:
    """A signature as cosign writes it under its `sha256-<hex>.sig` tag: an image manifest whose
    layer is the simple-signing payload, the signature in an annotation."""
    payload = _json(
        {
            "critical": {
                "identity": {"docker-reference": "registry.example/app"},
                "image": {"docker-manifest-digest": subject.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    )
    layer = Blob(payload, COSIGN_SIMPLESIGNING)
    config = Blob(
        _json(
            {
                "architecture": "",
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]},
            }
        ),
        OCI_CONFIG,
    )
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            layer.descriptor(annotations={"dev.cosignproject.cosign/signature": "MEUCIQ=="})
        ],
    }
    return Manifest(_json(document), OCI_MANIFEST, (config, layer))


def cosign_tag(subject: Manifest, suffix: str) -> str:
    return subject.digest.replace(":", "-") + f".{suffix}"


def referrers_index(referrers: Sequence[Manifest]) -> Manifest:
    """The tag-schema index (`sha256-<hex>`) a client maintains where there is no referrers
    API: one descriptor per referrer, with its artifactType."""
    manifests = []
    for referrer in referrers:
        document = json.loads(referrer.body)
        artifact_type = document.get("artifactType") or document["config"]["mediaType"]
        manifests.append(referrer.descriptor(artifactType=artifact_type))
    body = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    return Manifest(body, OCI_INDEX)


def schema1(
    label: str,
    *,
    signed: bool = True,
    created: str = "2016-02-03T04:05:06.123456789Z",
    repository: str = "legacy/app",
    tag: str = "v1",
) -> Manifest:
    """A schema 1 manifest of two distinct layers plus the empty layer twice, its newest history
    entry created at `created`. Signed as libtrust signs: the JSON pretty-printed with three
    spaces, and a `signatures` member spliced in before the closing brace, the protected header
    saying how long the signed part is (`formatLength`) and what followed it (`formatTail`)."""
    layers = [
        Blob(hashlib.shake_256(f"{label}/{i}".encode()).digest(1500 + i), DOCKER_LAYER)
        for i in range(2)
    ]
    empty = Blob(EMPTY_GZIP_TAR, DOCKER_LAYER)
    fs_layers = [empty, layers[1], empty, layers[0]]  # newest first
    history = [
        {
            "v1Compatibility": json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "created": created,
                    "id": "c" * 64,
                    "parent": "b" * 64,
                    "throwaway": True,
                }
            )
        },
        {
            "v1Compatibility": json.dumps(
                {"id": "b" * 64, "parent": "a" * 64, "created": "2016-02-03T04:00:00Z"}
            )
        },
        {
            "v1Compatibility": json.dumps(
                {
                    "id": "a" * 64,
                    "parent": "9" * 64,
                    "created": "2016-02-03T03:00:00Z",
                    "throwaway": True,
                }
            )
        },
        {"v1Compatibility": json.dumps({"id": "9" * 64, "created": "2016-02-03T02:00:00Z"})},
    ]
    document = {
        "schemaVersion": 1,
        "name": repository,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": blob.digest} for blob in fs_layers],
        "history": history,
    }
    payload = json.dumps(document, indent=3).encode()
    blobs = (*layers, empty)
    if not signed:
        return Manifest(payload, SCHEMA1_UNSIGNED, blobs)
    head = payload[: payload.rindex(b"}")].rstrip()
    tail = payload[len(head) :]
    protected = _b64url(
        _json(
            {"formatLength": len(head), "formatTail": _b64url(tail), "time": "2016-02-03T04:05:06Z"}
        )
    )
    signature = {
        "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "AA", "y": "AA"}, "alg": "ES256"},
        "signature": _b64url(b"not verified by pullers"),
        "protected": protected,
    }
    signed_body = head + b',\n   "signatures": ' + json.dumps([signature], indent=3).encode() + tail
    return Manifest(signed_body, SCHEMA1_SIGNED, blobs, canonical=payload)


# --- pushing over plain HTTP, as a minimal client does ------------------------------------------


@dataclass
class Pusher:
    """Pushes blobs and manifests to a plain-HTTP registry on loopback with urllib alone."""

    url: str
    pushed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.url.startswith("http://127.0.0.1:"):
            raise ValueError(f"{self.url} is not a plain-HTTP registry on loopback")

    def _send(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
        return urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback only

    def get(
        self, repository: str, reference: str, accept: str, method: str = "GET"
    ) -> tuple[str, bytes]:
        """A manifest as served: its Docker-Content-Digest and body."""
        url = f"{self.url}/v2/{repository}/manifests/{reference}"
        with self._send(method, url, headers={"Accept": accept}) as response:
            return str(response.headers.get("Docker-Content-Digest", "")), response.read()

    def mount(self, repository: str, blob: Blob, source: str) -> int:
        """A cross-repository blob mount (distribution spec): the HTTP status it answered."""
        url = f"{self.url}/v2/{repository}/blobs/uploads/?mount={blob.digest}&from={source}"
        with self._send("POST", url, b"") as response:
            status: int = response.status
            return status

    def blob(self, repository: str, blob: Blob) -> None:
        """The monolithic upload of the distribution spec: POST, then PUT with the digest."""
        with self._send("POST", f"{self.url}/v2/{repository}/blobs/uploads/", b"") as started:
            location = started.headers["Location"]
        target = location if location.startswith("http") else self.url + location
        separator = "&" if "?" in target else "?"
        with self._send(
            "PUT",
            f"{target}{separator}digest={blob.digest}",
            blob.data,
            {"Content-Type": "application/octet-stream"},
        ):
            pass

    def manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        """Push `manifest` with its blobs and children first, under `tag` or its digest."""
        for blob in manifest.blobs:
            self.blob(repository, blob)
        for child in manifest.children:
            self.manifest(repository, child)
        reference = tag or manifest.digest
        try:
            with self._send(
                "PUT",
                f"{self.url}/v2/{repository}/manifests/{reference}",
                manifest.body,
                {"Content-Type": manifest.media_type},
            ) as response:
                served: str = response.headers.get("Docker-Content-Digest", "")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"PUT {reference}: {exc.code} {exc.read()[:300]!r}") from exc
        return served
