"""The canary against images written and read by independent tools: umoci and skopeo.

Images built by umoci and pushed by skopeo are probed, and what the canary reports (digests,
blobs, platforms, published dates, failures) is compared with what skopeo reports. In the
other direction, images pushed by `seed` are read back by skopeo, which verifies every digest.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.registry.response import RANGE_BYTES
from canary.testbed import LocalRegistry
from tests.conftest import catalog, probe_json, seed_images, write_config
from tests.oci_tools import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutImage,
    Skopeo,
    ToolError,
    add_index,
    blobs_of,
    build_image,
    init_layout,
    sha256_digest,
)

pytestmark = pytest.mark.registry

SINGLE_CREATED = "2019-03-04T05:06:07Z"
FRACTION_CREATED = "2019-03-04T07:06:07.123456789+02:00"
FRACTION_INSTANT = datetime(2019, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
MULTI_CREATED = "2020-06-07T08:09:10Z"
PAYLOAD_BYTES = 3000  # incompressible, so one layer is larger than a range check reads


def _layers(label: str) -> list[dict[str, bytes]]:
    """Two layers of small files whose content depends only on `label`."""
    return [
        {
            "etc/canary/release": f"{label}\n".encode(),
            "etc/canary/motd": f"built by umoci for {label}\n".encode(),
        },
        {"opt/canary/payload.bin": hashlib.shake_256(label.encode()).digest(PAYLOAD_BYTES)},
    ]


@dataclass(frozen=True)
class Layouts:
    single: LayoutImage  # linux/arm64, created SINGLE_CREATED
    fraction: LayoutImage  # linux/amd64, created FRACTION_CREATED
    amd64: LayoutImage
    arm64: LayoutImage
    multi_ref: str  # the index of amd64 and arm64 in the same layout
    index_digest: str


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Layouts:
    """OCI layouts written once by umoci: single images, and a two-platform index."""
    work = tmp_path_factory.mktemp("umoci")
    single_layout = init_layout(work / "single")
    single = build_image(
        single_layout,
        "v1",
        _layers("single"),
        platform="linux/arm64",
        created=SINGLE_CREATED,
        workdir=work,
    )
    fraction = build_image(
        single_layout,
        "fraction",
        _layers("fraction"),
        platform="linux/amd64",
        created=FRACTION_CREATED,
        workdir=work,
    )
    multi_layout = init_layout(work / "multi")
    amd64, arm64 = (
        build_image(
            multi_layout,
            architecture,
            _layers(f"multi-{architecture}"),
            platform=f"linux/{architecture}",
            created=MULTI_CREATED,
            workdir=work,
        )
        for architecture in ("amd64", "arm64")
    )
    index_digest = add_index(multi_layout, "multi", [amd64, arm64])
    return Layouts(single, fraction, amd64, arm64, "multi", index_digest)


def _probe(
    tmp_path: Path, registry: LocalRegistry, images: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    return probe_json(write_config(tmp_path, catalog(registry.url, images)))


def _push_index(skopeo: Skopeo, layouts: Layouts, repository: str, tag: str) -> None:
    skopeo.push(layouts.amd64.layout, layouts.multi_ref, repository, tag, all_platforms=True)


def _served_index(
    skopeo: Skopeo, repository: str, tag: str
) -> tuple[str, dict[str, tuple[str, set[str]]]]:
    """As skopeo reads it: the index digest, and per platform its manifest digest and blobs."""
    raw = skopeo.inspect_raw(repository, tag)
    platforms: dict[str, tuple[str, set[str]]] = {}
    for entry in json.loads(raw)["manifests"]:
        name = f"{entry['platform']['os']}/{entry['platform']['architecture']}"
        child = skopeo.inspect_raw(repository, entry["digest"])
        assert sha256_digest(child) == entry["digest"]
        platforms[name] = (entry["digest"], blobs_of(child))
    return sha256_digest(raw), platforms


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture
def skopeo(registry: LocalRegistry, tmp_path: Path) -> Skopeo:
    return Skopeo(registry.url, tmp_path / "skopeo")


@pytest.mark.parametrize("blob_check", ["get", "range", "head"])
@pytest.mark.parametrize(
    ("manifest_format", "media_type"),
    [(None, OCI_MANIFEST), ("v2s2", DOCKER_MANIFEST)],
    ids=["oci", "docker-v2s2"],
)
def test_single_platform_image_matches_what_skopeo_reports(
    registry: LocalRegistry,
    skopeo: Skopeo,
    layouts: Layouts,
    tmp_path: Path,
    blob_check: str,
    manifest_format: str | None,
    media_type: str,
) -> None:
    """A umoci image pushed by skopeo probes ok with skopeo's digest, blobs and created date."""
    image = layouts.single
    skopeo.push(
        image.layout, image.ref, "independent/single", "v1", manifest_format=manifest_format
    )
    raw = skopeo.inspect_raw("independent/single", "v1")
    served = json.loads(raw)
    digest = sha256_digest(raw)
    assert skopeo.inspect_digest("independent/single", "v1") == digest
    if manifest_format is None:
        assert digest == image.digest  # skopeo pushed umoci's manifest bytes unchanged
    descriptors = {d["digest"]: d for d in [served["config"], *served["layers"]]}
    assert set(descriptors) == blobs_of(raw)
    assert any(d["size"] > RANGE_BYTES for d in served["layers"])
    assert skopeo.inspect("independent/single", "v1")["Created"] == SINGLE_CREATED

    code, results = _probe(
        tmp_path,
        registry,
        [
            {
                "repository": "independent/single",
                "tag": "v1",
                "blob_check": blob_check,
                "published": SINGLE_CREATED,
            }
        ],
    )

    assert code == 0, results
    [result] = results
    assert (result["ok"], result["outcome"]) == (True, "ok")
    assert result["manifest"]["digest"] == digest
    assert result["manifest"]["outcome"] == "ok"
    assert result["manifest"]["media_type"] == media_type
    assert result["platform_manifests"] == []
    blobs = {blob["digest"]: blob for blob in result["blobs"]}
    assert set(blobs) == set(descriptors)
    for blob_digest, blob in blobs.items():
        size = descriptors[blob_digest]["size"]
        assert (blob["outcome"], blob["first_outcome"], blob["platform"]) == (
            "ok",
            "ok",
            "linux/arm64",
        )
        if blob_digest == served["config"]["digest"]:
            assert (blob["kind"], blob["bytes"]) == ("config", size)  # always read in full
        else:
            expected = {"get": size, "range": min(size, RANGE_BYTES), "head": 0}[blob_check]
            assert (blob["kind"], blob["bytes"]) == ("layer", expected)
    assert result["published"] == [
        {"timestamp": SINGLE_CREATED, "source": "config", "status": "ok", "detail": None}
    ]


def test_created_with_nanoseconds_and_offset_is_read_as_that_instant(
    registry: LocalRegistry, skopeo: Skopeo, layouts: Layouts, tmp_path: Path
) -> None:
    """A `created` of nanoseconds and +02:00, as umoci keeps it, is published as that instant."""
    image = layouts.fraction
    skopeo.push(image.layout, image.ref, "independent/fraction", "v1")
    assert skopeo.inspect("independent/fraction", "v1")["Created"] == FRACTION_CREATED

    code, results = _probe(
        tmp_path,
        registry,
        [
            {
                "repository": "independent/fraction",
                "tag": "v1",
                "published": "2019-03-04T05:06:07.123456Z",
            }
        ],
    )

    assert code == 0, results
    [result] = results
    assert result["published"][0]["status"] == "ok"
    assert _instant(result["published"][0]["timestamp"]) == FRACTION_INSTANT


def test_two_platform_index_reports_both_platforms(
    registry: LocalRegistry, skopeo: Skopeo, layouts: Layouts, tmp_path: Path
) -> None:
    """Every platform manifest and blob of a skopeo-pushed index is verified and labelled."""
    _push_index(skopeo, layouts, "independent/multi", "v1")
    index_digest, platforms = _served_index(skopeo, "independent/multi", "v1")
    assert index_digest == layouts.index_digest
    assert skopeo.inspect_digest("independent/multi", "v1") == index_digest
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    amd64_blobs, arm64_blobs = platforms["linux/amd64"][1], platforms["linux/arm64"][1]
    assert not amd64_blobs & arm64_blobs  # so every blob has exactly one right label

    code, results = _probe(
        tmp_path,
        registry,
        [{"repository": "independent/multi", "tag": "v1", "published": MULTI_CREATED}],
    )

    assert code == 0, results
    [result] = results
    assert (result["ok"], result["outcome"]) == (True, "ok")
    assert result["manifest"]["digest"] == index_digest
    assert result["manifest"]["media_type"] == OCI_INDEX
    assert {(m["platform"], m["digest"]) for m in result["platform_manifests"]} == {
        (name, digest) for name, (digest, _) in platforms.items()
    }
    assert {m["outcome"] for m in result["platform_manifests"]} == {"ok"}
    assert {m["media_type"] for m in result["platform_manifests"]} == {OCI_MANIFEST}
    assert len(result["blobs"]) == len(amd64_blobs | arm64_blobs)
    for name, (_, expected) in platforms.items():
        assert {b["digest"] for b in result["blobs"] if b["platform"] == name} == expected
    assert {(b["outcome"], b["first_outcome"]) for b in result["blobs"]} == {("ok", "ok")}
    assert (result["published"][0]["timestamp"], result["published"][0]["status"]) == (
        MULTI_CREATED,
        "ok",
    )


def test_platform_filter_fetches_only_that_platform(
    registry: LocalRegistry, skopeo: Skopeo, layouts: Layouts, tmp_path: Path
) -> None:
    """With `platforms: [linux/arm64]` only the arm64 manifest and blobs of the index are read."""
    _push_index(skopeo, layouts, "independent/multi", "v1")
    index_digest, platforms = _served_index(skopeo, "independent/multi", "v1")
    arm64_digest, arm64_blobs = platforms["linux/arm64"]

    code, results = _probe(
        tmp_path,
        registry,
        [{"repository": "independent/multi", "tag": "v1", "platforms": ["linux/arm64"]}],
    )

    assert code == 0, results
    [result] = results
    assert result["ok"] is True
    assert result["manifest"]["digest"] == index_digest
    assert [(m["platform"], m["digest"], m["outcome"]) for m in result["platform_manifests"]] == [
        ("linux/arm64", arm64_digest, "ok")
    ]
    assert {b["digest"] for b in result["blobs"]} == arm64_blobs
    assert {(b["platform"], b["outcome"]) for b in result["blobs"]} == {("linux/arm64", "ok")}
    assert not {b["digest"] for b in result["blobs"]} & platforms["linux/amd64"][1]


def test_platform_missing_from_the_index_is_manifest_unknown(
    registry: LocalRegistry, skopeo: Skopeo, layouts: Layouts, tmp_path: Path
) -> None:
    """Asking an amd64/arm64 index for linux/s390x fails manifest_unknown naming that platform."""
    _push_index(skopeo, layouts, "independent/multi", "v1")
    index_digest, _ = _served_index(skopeo, "independent/multi", "v1")

    code, results = _probe(
        tmp_path,
        registry,
        [{"repository": "independent/multi", "tag": "v1", "platforms": ["linux/s390x"]}],
    )

    assert code == 1, results
    [result] = results
    assert (result["ok"], result["outcome"]) == (False, "manifest_unknown")
    assert (result["manifest"]["digest"], result["manifest"]["outcome"]) == (index_digest, "ok")
    [missing] = result["platform_manifests"]
    assert (missing["platform"], missing["outcome"], missing["digest"]) == (
        "linux/s390x",
        "manifest_unknown",
        None,
    )
    assert "linux/s390x" in missing["evidence"]["detail"]
    assert result["blobs"] == []


def test_lost_layer_links_on_a_skopeo_pushed_repository(
    registry: LocalRegistry, skopeo: Skopeo, layouts: Layouts, tmp_path: Path
) -> None:
    """Without its blob links a repository serves manifests and tags but no blob; others are ok."""
    _push_index(skopeo, layouts, "incident/app", "v1")
    _push_index(skopeo, layouts, "bystander/app", "v1")  # the very same blobs
    index_digest, platforms = _served_index(skopeo, "incident/app", "v1")
    every_blob = set().union(*(blobs for _, blobs in platforms.values()))

    registry.remove_layer_links("incident/app")

    # What the incident looks like from outside the canary: manifests and tags still served,
    # blob data still on disk, and yet skopeo cannot pull the image any more.
    assert sha256_digest(skopeo.inspect_raw("incident/app", "v1")) == index_digest
    for digest, _ in platforms.values():
        assert sha256_digest(skopeo.inspect_raw("incident/app", digest)) == digest
    tags_url = f"{registry.url}/v2/incident/app/tags/list"
    with urllib.request.urlopen(tags_url, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200
        assert json.load(response)["tags"] == ["v1"]
    assert all(registry.blob_data(digest).is_file() for digest in every_blob)
    with pytest.raises(ToolError, match="404"):
        skopeo.copy_to_dir("incident/app", "v1", tmp_path / "pulled-incident")
    skopeo.copy_to_dir("bystander/app", "v1", tmp_path / "pulled-bystander")

    code, results = _probe(
        tmp_path,
        registry,
        [
            {"repository": "incident/app", "tag": "v1"},
            {"repository": "bystander/app", "tag": "v1"},
        ],
    )

    assert code == 1, results
    incident, bystander = results
    assert (incident["repository"], incident["ok"], incident["outcome"]) == (
        "incident/app",
        False,
        "blob_unknown",
    )
    assert (incident["manifest"]["digest"], incident["manifest"]["outcome"]) == (
        index_digest,
        "ok",
    )
    assert {(m["digest"], m["outcome"]) for m in incident["platform_manifests"]} == {
        (digest, "ok") for digest, _ in platforms.values()
    }
    assert {b["digest"] for b in incident["blobs"]} == every_blob
    for blob in incident["blobs"]:
        assert (blob["outcome"], blob["first_outcome"], blob["status"]) == (
            "blob_unknown",
            "blob_unknown",
            404,
        ), blob
        assert blob["evidence"]["code"] == "BLOB_UNKNOWN"
    assert incident["published"][0]["status"] == "missing"
    assert (bystander["repository"], bystander["ok"], bystander["outcome"]) == (
        "bystander/app",
        True,
        "ok",
    )
    assert {b["digest"] for b in bystander["blobs"]} == every_blob
    assert {b["outcome"] for b in bystander["blobs"]} == {"ok"}


def test_images_pushed_by_seed_read_back_by_skopeo(
    registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    """skopeo copies seed's images, verifying every digest, and shows seed's pins and dates."""
    wanted = {
        "seeded/single:v1": ("2021-02-03T04:05:06Z", ["amd64"]),
        "seeded/multi:v2": ("2022-11-03T08:00:00Z", ["amd64", "arm64"]),
    }
    document = catalog(
        registry.url,
        [
            {
                "repository": "seeded/single",
                "tag": "v1",
                "published": wanted["seeded/single:v1"][0],
            },
            {
                "repository": "seeded/multi",
                "tag": "v2",
                "published": wanted["seeded/multi:v2"][0],
                "platforms": ["linux/amd64", "linux/arm64"],
            },
        ],
    )
    output = seed_images(write_config(tmp_path, document), "--layers", "2", "--layer-size", "4KiB")
    pins = {f"{p['repository']}:{p['tag']}": p for p in yaml.safe_load(output)}
    assert set(pins) == set(wanted)

    for reference, (published, architectures) in wanted.items():
        repository, _, tag = reference.partition(":")
        pin = pins[reference]
        assert pin["published"] == _instant(published)  # YAML reads the printed date
        raw = skopeo.inspect_raw(repository, tag)
        assert sha256_digest(raw) == pin["digest"], reference
        assert skopeo.inspect_digest(repository, tag) == pin["digest"]
        for architecture in architectures:
            info = skopeo.inspect(repository, tag, architecture=architecture)
            assert (info["Digest"], info["Os"], info["Architecture"]) == (
                pin["digest"],
                "linux",
                architecture,
            ), reference
            assert _instant(info["Created"]) == _instant(published), reference
            assert len(info["Layers"]) == 2

        pulled = tmp_path / "pulled" / repository
        skopeo.copy_to_dir(repository, tag, pulled)
        assert sha256_digest((pulled / "manifest.json").read_bytes()) == pin["digest"]
        top = json.loads(raw)
        if len(architectures) == 1:
            assert top["mediaType"] == OCI_MANIFEST
            expected_blobs = blobs_of(top)
        else:
            assert top["mediaType"] == OCI_INDEX
            assert sorted(
                (e["platform"]["os"], e["platform"]["architecture"]) for e in top["manifests"]
            ) == [("linux", a) for a in architectures]
            expected_blobs = set()
            for entry in top["manifests"]:
                child = (pulled / f"{entry['digest'].partition(':')[2]}.manifest.json").read_bytes()
                assert sha256_digest(child) == entry["digest"]
                expected_blobs |= blobs_of(child)
        stored = {
            f"sha256:{path.name}": path.read_bytes()
            for path in pulled.iterdir()
            if len(path.name) == 64
        }
        assert set(stored) == expected_blobs, reference
        assert all(sha256_digest(data) == digest for digest, data in stored.items())
