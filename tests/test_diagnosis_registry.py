"""Diagnosis against the real registry and a running daemon: the incident's signature with the
control probe, the registry down, storage unreachable, and two environments that disagree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from canary.config import Image
from canary.seed import synthesize
from canary.testbed import LocalRegistry, free_port, start_registry
from tests.conftest import seed_images, write_config
from tests.daemon_fixtures import (
    DaemonFactory,
    DaemonProcess,
    daemon_catalog,
    equal,
    eventually,
    http_get,
)

pytestmark = pytest.mark.registry

CATALOG = ("canary/alpine", "canary/busybox", "canary/debian")
IMAGES = [{"repository": r, "tag": "v1"} for r in CATALOG]
CONTROL = "canary-control/fresh"
SIGNATURES = ("legacy_data_unreadable", "registry_down", "storage_unreachable", "auth_broken")
WAIT = 40.0


def diagnosis(daemon: DaemonProcess, environment: str = "local") -> dict[str, float]:
    """The daemon's registry_canary_diagnosis series of one environment, by signature."""
    return {
        s.labels["signature"]: s.value
        for s in daemon.metrics()
        if s.name == "registry_canary_diagnosis" and s.labels["environment"] == environment
    }


def only(signature: str | None) -> dict[str, float]:
    return {name: 1.0 if name == signature else 0.0 for name in SIGNATURES}


def value(daemon: DaemonProcess, name: str, **labels: str) -> float | None:
    for sample in daemon.metrics():
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def tags(registry: LocalRegistry, repository: str) -> list[str]:
    status, body = http_get(f"{registry.url}/v2/{repository}/tags/list")
    if status == 404:
        return []
    assert status == 200, body
    return sorted(json.loads(body).get("tags") or [])


def all_verified(daemon: DaemonProcess, environment: str = "local") -> None:
    status, document = daemon.get_json("/status")
    assert status == 200
    mine = [i for i in document["images"] if i["environment"] == environment]
    assert mine
    assert all(i["ok"] for i in mine), [(i["repository"], i["outcome"]) for i in mine]


def seeded(registry: LocalRegistry, root: Path) -> None:
    document = {"environments": [{"name": "local", "url": registry.url}], "images": IMAGES}
    seed_images(write_config(root, document, name=f"seed-{registry.port}.yaml"))


def with_control(url: str, name: str = "local") -> dict[str, Any]:
    return {"name": name, "url": url, "control": {"repository": CONTROL, "interval": "1s"}}


class TestLegacyDataUnreadable:
    def test_old_data_lost_while_fresh_pushes_work(
        self, registry: LocalRegistry, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """With every catalog repository's blob links gone and the control repository writable,
        the daemon states legacy_data_unreadable, shows it on /status and the status page,
        and takes it back once the images are pushed again."""
        seeded(registry, tmp_path)
        catalog_tags = {r: tags(registry, r) for r in CATALOG}
        daemon = daemons.start("canary", daemon_catalog([with_control(registry.url)], IMAGES))
        eventually(lambda: all_verified(daemon), timeout=WAIT)
        eventually(
            lambda: equal(value(daemon, "registry_canary_control_pull_success"), 1.0),
            timeout=WAIT,
        )
        assert diagnosis(daemon) == only(None)

        for repository in CATALOG:
            registry.remove_layer_links(repository)
        eventually(lambda: equal(diagnosis(daemon), only("legacy_data_unreadable")), WAIT)

        _status, document = daemon.get_json("/status")
        (environment,) = document["environments"]
        signatures = environment["diagnosis"]["signatures"]
        assert [s["signature"] for s in signatures] == ["legacy_data_unreadable"]
        assert "previously written data" in signatures[0]["explanation"]
        assert environment["control"]["ok"] is True
        assert environment["control"]["repository"] == CONTROL
        page = daemon.get("/")[1].decode()
        assert 'data-signature="legacy_data_unreadable"' in page
        last = daemon.events("diagnosis")[-1]
        assert (last["signature"], last["active"]) == ("legacy_data_unreadable", True)
        # The control's writes are counted, and it cleans up after itself: read from one scrape,
        # a round's uploads and its delete.
        writes = {
            (s.labels["operation"], s.labels["outcome"]): s.value
            for s in daemon.metrics()
            if s.name == "registry_canary_control_writes_total"
        }
        assert writes.get(("blob_upload", "ok"), 0.0) >= 2, writes
        assert writes.get(("manifest_delete", "ok"), 0.0) >= 1, writes

        again = {"environments": [{"name": "local", "url": registry.url}], "images": IMAGES}
        seed_images(write_config(tmp_path, again, name="repush.yaml"), "--repush")
        eventually(lambda: equal(diagnosis(daemon), only(None)), WAIT)
        daemon.stop()  # no control round is in flight while the tags are read below
        # Catalog repositories were never written by the control probe; its own tags are gone.
        assert {r: tags(registry, r) for r in CATALOG} == catalog_tags
        assert tags(registry, CONTROL) == []


class TestOtherSignatures:
    def test_registry_stopped_is_registry_down(
        self, registry: LocalRegistry, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """When the registry stops answering, every pull and the control fail: registry_down."""
        seeded(registry, tmp_path)
        document = daemon_catalog([with_control(registry.url)], IMAGES, timeout="3s")
        daemon = daemons.start("canary", document)
        eventually(lambda: all_verified(daemon), timeout=WAIT)
        registry.stop()
        eventually(lambda: equal(diagnosis(daemon), only("registry_down")), WAIT)
        _status, status = daemon.get_json("/status")
        assert status["environments"][0]["control"]["ok"] is False

    def test_storage_redirect_target_down_is_storage_unreachable(
        self, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """A registry that redirects blob reads to storage nobody answers on: manifests load,
        every blob fails at the storage hop, and the diagnosis is storage_unreachable."""
        root = tmp_path / "registry"
        with start_registry(root) as plain:
            seeded(plain, tmp_path)
        dead = f"http://127.0.0.1:{free_port()}/"
        with start_registry(root, redirect_to=dead) as redirecting:
            environments = [{"name": "local", "url": redirecting.url}]
            daemon = daemons.start("canary", daemon_catalog(environments, IMAGES))

            def all_failed_at_storage() -> None:
                _status, document = daemon.get_json("/status")
                images = document["images"]
                assert sorted(image["repository"] for image in images) == list(CATALOG)
                for image in images:
                    assert image["outcome"] == "connection_error"
                    blobs = image["result"]["blobs"]
                    assert blobs
                    assert {b["hop"] for b in blobs} == {"storage"}

            eventually(all_failed_at_storage, WAIT)
            assert diagnosis(daemon) == only("storage_unreachable")


class TestConsistency:
    def test_one_broken_environment_of_two_is_flagged(
        self, registry: LocalRegistry, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """The same pinned catalog in two registries, one image broken and another tag deleted
        in the second: /status and the status page name both as differing, and
        tag_digest_matches_pin says which tag no longer serves its pin."""
        pinned = [
            {**image, "digest": synthesize(Image(**image), 2, 16 * 1024).digest} for image in IMAGES
        ]
        with start_registry(tmp_path / "second") as second:
            seeded(registry, tmp_path)
            seeded(second, tmp_path)
            second.remove_layer_links("canary/busybox")
            second.remove_tag("canary/debian", "v1")
            environments = [
                {"name": "staging", "url": registry.url},
                {"name": "production", "url": second.url},
            ]
            daemon = daemons.start("canary", daemon_catalog(environments, pinned))

            def flagged() -> list[dict[str, Any]]:
                _status, document = daemon.get_json("/status")
                found = document["differences"]
                assert sorted(d["repository"] for d in found) == [
                    "canary/busybox",
                    "canary/debian",
                ], found
                return list(found)

            found = eventually(flagged, WAIT)
            for difference in found:
                assert difference["healthy_in"] == ["staging"]
                assert difference["failing_in"] == ["production"]
            busybox = next(d for d in found if d["repository"] == "canary/busybox")
            assert busybox["outcomes"] == {"staging": "ok", "production": "blob_unknown"}
            digest = pinned[1]["digest"]
            assert busybox["served_digests"] == {"staging": digest, "production": digest}

            page = daemon.get("/")[1].decode()
            assert '<h2 id="differences">' in page
            assert page.count("differs between environments</a>") == 2

            def pins() -> dict[tuple[str, str], float]:
                return {
                    (s.labels["environment"], s.labels["repository"]): s.value
                    for s in daemon.metrics()
                    if s.name == "registry_canary_tag_digest_matches_pin"
                }

            expected = {(env, r): 1.0 for env in ("staging", "production") for r in CATALOG}
            expected["production", "canary/debian"] = 0.0
            eventually(lambda: equal(pins(), expected), WAIT)
