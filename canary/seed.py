"""Deterministic synthetic images for catalog entries, and `seed`, which pushes those missing."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from canary.config import Image
from canary.registry.client import RegistryClient
from canary.registry.errors import RegistryError
from canary.registry.media import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST
from canary.registry.push import Blob, PushError, SyntheticImage, existing, push

DEFAULT_PUBLISHED = datetime(2023, 5, 1, 12, 0, tzinfo=UTC)
DEFAULT_PLATFORM = "linux/amd64"


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _layer(seed: str, index: int, size: int, mtime: datetime) -> Blob:
    # Mersenne Twister output for a given seed is stable across CPython versions, so the
    # same catalog entry always makes the same bytes, the same digests, and the same pins.
    content = random.Random(f"{seed}/{index}").randbytes(size)  # noqa: S311 - not for security
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(f"canary/layer-{index}.bin")
        info.size, info.mode, info.mtime = size, 0o644, int(mtime.timestamp())
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        archive.addfile(info, io.BytesIO(content))
    return Blob(OCI_LAYER, buffer.getvalue())


def _platform_image(
    image_key: str, platform: str, published: datetime, layers: int, layer_size: int
) -> tuple[list[Blob], Blob]:
    parts = platform.split("/")
    layer_blobs = [
        _layer(f"{image_key}/{platform}", i, layer_size, published) for i in range(layers)
    ]
    config: dict[str, object] = {
        "architecture": parts[1],
        "os": parts[0],
        "created": _rfc3339(published),
        "config": {"Labels": {"org.opencontainers.image.title": image_key}},
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layer_blobs]},
        "history": [{"created": _rfc3339(published), "created_by": "registry-canary seed"}],
    }
    if len(parts) == 3:
        config["variant"] = parts[2]
    config_blob = Blob(OCI_CONFIG, _json(config))
    manifest = Blob(
        OCI_MANIFEST,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layer_blobs],
            }
        ),
    )
    return [config_blob, *layer_blobs], manifest


def synthesize(image: Image, layers: int = 2, layer_size: int = 16 * 1024) -> SyntheticImage:
    """The image `seed` pushes for a catalog entry: a function of the entry and the sizes only."""
    published = image.published or DEFAULT_PUBLISHED
    platforms = image.platforms if isinstance(image.platforms, tuple) else (DEFAULT_PLATFORM,)
    key = f"{image.repository}:{image.tag}"
    blobs: list[Blob] = []
    manifests: list[tuple[str, Blob]] = []
    for platform in platforms:
        platform_blobs, manifest = _platform_image(key, platform, published, layers, layer_size)
        blobs += platform_blobs
        manifests.append((platform, manifest))
    if len(manifests) == 1:
        return SyntheticImage(
            image.repository, image.tag, published, tuple(blobs), (), manifests[0][1]
        )

    def platform_of(name: str) -> dict[str, str]:
        parts = name.split("/")
        entry = {"os": parts[0], "architecture": parts[1]}
        if len(parts) == 3:
            entry["variant"] = parts[2]
        return entry

    index = Blob(
        OCI_INDEX,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [m.descriptor(platform=platform_of(p)) for p, m in manifests],
            }
        ),
    )
    return SyntheticImage(
        image.repository, image.tag, published, tuple(blobs), tuple(m for _, m in manifests), index
    )


@dataclass(frozen=True, slots=True)
class SeedReport:
    image: Image
    action: str  # "pushed", "repushed", "present", or "refused"
    digest: str | None
    published: datetime
    detail: str = ""


async def seed(
    client: RegistryClient,
    images: Sequence[Image],
    layers: int,
    layer_size: int,
    repush: bool = False,
) -> list[SeedReport]:
    """Push every image the environment lacks; never overwrite a tag that exists.

    With `repush`, a tag that already holds exactly what seed makes is pushed again: blobs the
    repository no longer links are uploaded, which restores them (the incident's remedy).
    """
    reports = []
    for image in images:
        synthetic = synthesize(image, layers, layer_size)
        if image.digest and image.digest != synthetic.digest:
            reports.append(
                SeedReport(
                    image,
                    "refused",
                    synthetic.digest,
                    synthetic.published,
                    f"the catalog pins {image.digest}; seed makes "
                    f"{synthetic.digest} with these sizes",
                )
            )
            continue
        try:
            served = await existing(client, image.repository, "manifests", image.tag)
            if served is not None and not (repush and served == synthetic.digest):
                detail = "" if served == synthetic.digest else "not made by seed; published unknown"
                reports.append(SeedReport(image, "present", served, synthetic.published, detail))
                continue
            await push(client, synthetic)
            if served is not None:
                reports.append(SeedReport(image, "repushed", synthetic.digest, synthetic.published))
                continue
        except (RegistryError, PushError) as exc:
            reports.append(SeedReport(image, "refused", None, synthetic.published, str(exc)))
            continue
        reports.append(SeedReport(image, "pushed", synthetic.digest, synthetic.published))
    return reports


def render_pins(reports: Sequence[SeedReport]) -> str:
    """YAML catalog entries with their pins, to paste into the config."""
    lines = []
    for report in reports:
        lines.append(f"# {report.action}" + (f": {report.detail}" if report.detail else ""))
        lines.append(f"- repository: {report.image.repository}")
        lines.append(f'  tag: "{report.image.tag}"')
        if report.digest:
            lines.append(f"  digest: {report.digest}")
        if report.action != "present" or not report.detail:
            lines.append(f"  published: {_rfc3339(report.published)}")
    return "\n".join(lines) + "\n"
