"""The probe against the real CNCF distribution registry: the incident and other data loss."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canary.config import parse_config
from canary.probe import probe_catalog
from canary.registry.client import RegistryClient
from canary.seed import seed
from canary.testbed import LocalRegistry, start_registry
from tests.conftest import catalog, probe_json, run_cli, seed_images, write_config

pytestmark = pytest.mark.registry

IMAGES = [
    {"repository": "canary/alpine", "tag": "2023-05", "published": "2023-05-01T12:00:00Z"},
    {"repository": "canary/busybox", "tag": "1.36", "published": "2023-02-14T09:30:00Z"},
    {"repository": "canary/multi", "tag": "v1", "platforms": ["linux/amd64", "linux/arm64"]},
]


def by_repository(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["repository"]: r for r in results}


def http_status(url: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        url, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http
        status: int = response.status
        return status


@pytest.fixture
def seeded(registry: LocalRegistry, tmp_path: Path) -> Path:
    """The three catalog images pushed by `seed`, and the catalog file that pins them."""
    config = write_config(tmp_path, catalog(registry.url, IMAGES))
    seed_images(config, "--layers", "2", "--layer-size", "8KiB")
    return config


class TestHealthy:
    def test_all_ok(self, seeded: Path) -> None:
        """Seeded images pull and verify: exit 0, every manifest and blob ok, dates read."""
        status, results = probe_json(seeded)
        assert status == 0
        assert [r["ok"] for r in results] == [True, True, True]
        alpine = by_repository(results)["canary/alpine"]
        assert alpine["published"] == [
            {
                "timestamp": "2023-05-01T12:00:00Z",
                "source": "config",
                "status": "ok",
                "detail": None,
            }
        ]
        assert len(alpine["blobs"]) == 3
        assert all(b["outcome"] == "ok" and b["hop"] == "registry" for b in alpine["blobs"])
        multi = by_repository(results)["canary/multi"]
        assert sorted(m["platform"] for m in multi["platform_manifests"]) == [
            "linux/amd64",
            "linux/arm64",
        ]
        assert {b["platform"] for b in multi["blobs"]} == {"linux/amd64", "linux/arm64"}

    def test_text_table(self, seeded: Path) -> None:
        """The text format is a table with a row per image and a summary line."""
        done = run_cli("probe", "--config", str(seeded))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split() == [
            "ENVIRONMENT",
            "IMAGE",
            "RESULT",
            "MANIFEST",
            "BLOBS",
            "OK",
            "PUBLISHED",
            "TIME",
        ]
        assert any(
            line.startswith("local") and "canary/alpine:2023-05" in line and " ok " in line
            for line in lines
        )
        assert lines[-1] == "3 of 3 image pulls verified, 0 failed"

    def test_unknown_environment_is_usage_error(self, seeded: Path) -> None:
        """Asking for an environment the config lacks exits 2 naming it."""
        done = run_cli("probe", "--config", str(seeded), "--environment", "nope")
        assert done.returncode == 2
        assert "unknown environment 'nope'" in done.stderr


class TestIncident:
    def test_missing_layer_links(
        self, registry: LocalRegistry, seeded: Path, tmp_path: Path
    ) -> None:
        """Links gone: manifest and tags 200, blobs blob_unknown, other and new images ok."""
        registry.remove_layer_links("canary/alpine")
        assert http_status(f"{registry.url}/v2/canary/alpine/manifests/2023-05") == 200
        assert http_status(f"{registry.url}/v2/canary/alpine/tags/list") == 200

        # A push after the break works end to end, which is why push-then-pull tests stayed green.
        fresh = write_config(
            tmp_path,
            catalog(registry.url, [*IMAGES, {"repository": "canary/fresh", "tag": "new"}]),
            "fresh.yaml",
        )
        seed_images(fresh, "--layers", "2", "--layer-size", "8KiB")

        status, results = probe_json(fresh)
        assert status == 1
        found = by_repository(results)
        broken = found["canary/alpine"]
        assert broken["ok"] is False
        assert broken["outcome"] == "blob_unknown"
        assert broken["manifest"]["outcome"] == "ok"
        assert len(broken["blobs"]) == 3
        for blob in broken["blobs"]:
            assert (blob["outcome"], blob["first_outcome"], blob["status"]) == (
                "blob_unknown",
                "blob_unknown",
                404,
            )
            assert blob["evidence"]["code"] == "BLOB_UNKNOWN"
        assert broken["published"][0]["status"] == "missing"
        for healthy in ("canary/busybox", "canary/multi", "canary/fresh"):
            assert found[healthy]["ok"], found[healthy]

        # Pushing the same image again rewrites the links: the remedy, and the recovery signal.
        assert "# repushed" in seed_images(
            fresh, "--layers", "2", "--layer-size", "8KiB", "--repush"
        )
        status, results = probe_json(fresh)
        assert status == 0, [r["outcome"] for r in results]

    def test_head_mode_sees_it_too(
        self, registry: LocalRegistry, seeded: Path, tmp_path: Path
    ) -> None:
        """HEAD-only checking catches missing links as blob_unknown as well."""
        registry.remove_layer_links("canary/busybox")
        doc = catalog(registry.url, IMAGES)
        doc["defaults"]["blob_check"] = "head"
        status, results = probe_json(write_config(tmp_path, doc, "head.yaml"))
        assert status == 1
        busybox = by_repository(results)["canary/busybox"]
        assert [b["outcome"] for b in busybox["blobs"]] == ["blob_unknown"] * 3
        assert by_repository(results)["canary/alpine"]["ok"]


class TestDataLoss:
    def _blob(self, results: list[dict[str, Any]], repository: str, kind: str) -> dict[str, Any]:
        return next(b for b in by_repository(results)[repository]["blobs"] if b["kind"] == kind)

    def test_blob_data_deleted(self, registry: LocalRegistry, seeded: Path) -> None:
        """A layer whose data file is gone is blob_unknown while the rest of the image is ok."""
        _, before = probe_json(seeded)
        layer = self._blob(before, "canary/alpine", "layer")["digest"]
        registry.blob_data(layer).unlink()
        status, results = probe_json(seeded)
        assert status == 1
        outcomes = {
            b["digest"]: b["outcome"] for b in by_repository(results)["canary/alpine"]["blobs"]
        }
        assert outcomes[layer] == "blob_unknown"
        assert sorted(outcomes.values()) == ["blob_unknown", "ok", "ok"]

    def test_blob_data_corrupted(self, registry: LocalRegistry, seeded: Path) -> None:
        """A layer whose bytes changed on disk is digest_mismatch, confirmed on a second fetch."""
        _, before = probe_json(seeded)
        layer = self._blob(before, "canary/busybox", "layer")["digest"]
        data = registry.blob_data(layer)
        original = data.read_bytes()
        data.write_bytes(bytes(b ^ 0xFF for b in original[:100]) + original[100:])
        status, results = probe_json(seeded)
        assert status == 1
        blob = next(
            b for b in by_repository(results)["canary/busybox"]["blobs"] if b["digest"] == layer
        )
        assert (blob["outcome"], blob["first_outcome"]) == ("digest_mismatch", "digest_mismatch")
        assert "hashes to sha256:" in blob["evidence"]["detail"]

    def test_tag_deleted(self, registry: LocalRegistry, seeded: Path) -> None:
        """A tag that disappeared is manifest_unknown."""
        registry.remove_tag("canary/alpine", "2023-05")
        status, results = probe_json(seeded)
        assert status == 1
        alpine = by_repository(results)["canary/alpine"]
        assert alpine["manifest"]["outcome"] == "manifest_unknown"
        assert alpine["manifest"]["first_outcome"] == "manifest_unknown"
        assert alpine["blobs"] == []

    def test_pin_no_longer_matches(
        self, registry: LocalRegistry, seeded: Path, tmp_path: Path
    ) -> None:
        """A pinned digest the tag no longer has fails the pull; a changed date is flagged."""
        pinned = [
            dict(IMAGES[0], digest="sha256:" + "0" * 64),
            dict(IMAGES[1], published="2020-01-01T00:00:00Z"),
        ]
        status, results = probe_json(
            write_config(tmp_path, catalog(registry.url, pinned), "pins.yaml")
        )
        assert status == 1
        found = by_repository(results)
        assert found["canary/alpine"]["outcome"] == "digest_mismatch"
        assert "pinned digest" in found["canary/alpine"]["manifest"]["evidence"]["detail"]
        assert found["canary/busybox"]["ok"]
        assert found["canary/busybox"]["published"][0]["status"] == "mismatch"


class TestSeed:
    def test_seed_is_deterministic_and_does_not_overwrite(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        """Seed prints the same pins on another registry, and reports existing tags as present."""
        config = write_config(tmp_path, catalog(registry.url, IMAGES[:1]))
        first = seed_images(config)
        assert "# pushed" in first
        again = seed_images(config)
        assert "# present" in again
        with start_registry(tmp_path / "other") as other:
            other_config = write_config(tmp_path, catalog(other.url, IMAGES[:1]), "other.yaml")
            elsewhere = seed_images(other_config)
        digest_line = next(line for line in first.splitlines() if "digest:" in line)
        assert digest_line in elsewhere
        assert digest_line in again

    def test_seed_refuses_a_pin_it_cannot_make(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        """An entry pinned to a digest seed would not produce is refused, and nothing is pushed."""
        config = write_config(
            tmp_path, catalog(registry.url, [dict(IMAGES[0], digest="sha256:" + "1" * 64)])
        )
        done = run_cli("seed", "--config", str(config), "--environment", "local")
        assert done.returncode == 1
        assert "refused" in done.stderr
        assert not registry.repository_dir("canary/alpine").exists()


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    """A bcrypt htpasswd file with the user canary, as the registry's Basic auth wants."""
    path = tmp_path / "htpasswd"
    subprocess.run(
        ["htpasswd", "-Bbc", str(path), "canary", "s3cret-pw"], check=True, capture_output=True
    )
    return path


@pytest.fixture
async def storage_server(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestServer, list[dict[str, str]], dict[str, int]]]:
    """Stands in for object storage behind the registry's redirect middleware, serving its files."""
    root = tmp_path / "redirecting" / "storage"
    seen: list[dict[str, str]] = []
    fail = {"status": 0}

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if fail["status"]:
            return web.Response(status=fail["status"], headers={"X-Amz-Request-Id": "s3-req-42"})
        path = (root / request.path.lstrip("/")).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, seen, fail
    finally:
        await server.close()


class TestRedirectToStorage:
    async def test_storage_hop(self, tmp_path: Path, storage_server: Any, htpasswd: Path) -> None:
        """Blobs come from storage without the registry's Authorization; failures say storage."""
        server, seen, fail = storage_server
        with start_registry(
            tmp_path / "redirecting",
            htpasswd=htpasswd,
            redirect_to=f"http://127.0.0.1:{server.port}/",
        ) as registry:
            document = catalog(
                registry.url, IMAGES[:1], auth={"username": "canary", "password_env": "PW"}
            )
            config = parse_config(document, "test", {"PW": "s3cret-pw"})
            async with RegistryClient(config.environments[0]) as client:
                reports = await seed(client, list(config.images), 2, 4096)
            assert [r.action for r in reports] == ["pushed"]
            seen.clear()

            results = await probe_catalog(config)
            assert results[0].ok, json.dumps(results[0].to_dict(), indent=1)
            assert {b.hop.value for b in results[0].blobs} == {"storage"}
            assert len(seen) == 3
            assert all("Authorization" not in headers for headers in seen)

            fail["status"] = 503
            broken = (await probe_catalog(config))[0]
            assert not broken.ok
            for blob in broken.blobs:
                assert (blob.outcome.value, blob.hop.value, blob.status) == (
                    "http_5xx",
                    "storage",
                    503,
                )
                assert blob.request_id == "s3-req-42"
            text = json.dumps(broken.to_dict())
            assert "s3cret-pw" not in text
