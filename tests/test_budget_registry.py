"""blob_check: budget against the real registry: a HEAD for every layer each round, full
downloads within the budget, its metrics in the daemon, and `check-config --measure`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from canary.config import Image
from canary.seed import synthesize
from canary.testbed import LocalRegistry
from tests.conftest import catalog, probe_json, run_cli, seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, daemon_catalog, eventually

pytestmark = pytest.mark.registry

IMAGES = [
    {"repository": r, "tag": "v1"} for r in ("canary/alpine", "canary/busybox", "canary/debian")
]
BUDGET = 2 * 1024 * 1024  # bytes per hour: a minute's worth is about two of the seeded layers
WAIT = 40.0


def layer_sizes() -> dict[str, int]:
    """The distinct layers `seed` pushes for the catalog, with their sizes."""
    sizes = {}
    for image in IMAGES:
        synthetic = synthesize(Image(**image))
        for blob in synthetic.blobs:
            if blob.media_type.endswith("tar"):
                sizes[blob.digest] = len(blob.data)
    return sizes


def budgeted(url: str, within: str) -> dict[str, Any]:
    document = catalog(url, IMAGES)
    document["defaults"].update(
        {"blob_check": "budget", "budget": {"bytes_per_hour": BUDGET, "full_verify_within": within}}
    )
    return document


def metric(daemon: DaemonProcess, name: str) -> float:
    found = [s.value for s in daemon.metrics() if s.name == name]
    assert found, f"no {name}"
    return found[0]


class TestOneShotProbe:
    def test_every_layer_checked_and_few_downloaded(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        """`probe` under a budget verifies every pull, checks every layer, and downloads in full
        only what a fresh budget's first minute allows."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES)))
        config = write_config(tmp_path, budgeted(registry.url, "1h"), name="budget.yaml")
        status, results = probe_json(config)
        assert status == 0, results
        sizes = layer_sizes()
        layers = [b for r in results for b in r["blobs"] if b["kind"] == "layer"]
        assert sorted(b["digest"] for b in layers) == sorted(sizes)
        downloaded = [b for b in layers if b["bytes"] > 0]
        assert downloaded, "nothing was verified in full"
        assert all(b["bytes"] == sizes[b["digest"]] for b in downloaded)
        assert sum(b["bytes"] for b in downloaded) <= max(max(sizes.values()), BUDGET / 60)
        assert len(downloaded) < len(layers)


class TestDaemon:
    def test_budget_metrics_and_the_byte_cap(self, registry: LocalRegistry, tmp_path: Path) -> None:
        """The daemon pulls every image on schedule, exports the budget, the measured catalog
        and the oldest verification age, and never downloads more than the budget allows."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES)))
        (tmp_path / "daemon").mkdir()
        factory = DaemonFactory(tmp_path / "daemon")
        sizes = layer_sizes()
        document = daemon_catalog(
            [{"name": "local", "url": registry.url}],
            IMAGES,
            blob_check="budget",
            budget={"bytes_per_hour": BUDGET, "full_verify_within": "1h"},
        )
        try:
            started = time.monotonic()
            daemon = factory.start("canary", document)
            eventually(
                lambda: _equal(
                    metric(daemon, "registry_canary_budget_catalog_bytes"),
                    float(sum(sizes.values())),
                ),
                WAIT,
            )
            assert metric(daemon, "registry_canary_budget_bytes_per_hour") == BUDGET
            assert metric(daemon, "registry_canary_budget_full_verify_within_seconds") == 3600
            assert metric(daemon, "registry_canary_budget_sufficient") == 1
            assert (
                metric(daemon, "registry_canary_budget_oldest_full_verification_age_seconds") >= 0
            )
            verified = metric(daemon, "registry_canary_budget_verified_bytes_total")
            elapsed = time.monotonic() - started
            burst = max(max(sizes.values()), BUDGET / 60)
            assert 0 < verified <= burst + (BUDGET - burst) / 3600 * elapsed
            pulls = [e for e in daemon.events("image_probed") if e["outcome"] == "ok"]
            assert len(pulls) >= 3
            _status, document_ = daemon.get_json("/status")
            budget = document_["environments"][0]["budget"]
            assert budget["layers"] == len(sizes)
            assert budget["shortfall"] is None
        finally:
            factory.stop_all()

    def test_a_budget_too_small_says_so(self, registry: LocalRegistry, tmp_path: Path) -> None:
        """With full_verify_within shorter than the budget can cover, the daemon exports
        budget_sufficient 0 and logs the key to change with the numbers."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES)))
        (tmp_path / "daemon").mkdir()
        factory = DaemonFactory(tmp_path / "daemon")
        document = daemon_catalog(
            [{"name": "local", "url": registry.url}],
            IMAGES,
            blob_check="budget",
            budget={"bytes_per_hour": BUDGET, "full_verify_within": "2m"},
        )
        try:
            daemon = factory.start("canary", document)
            eventually(
                lambda: _equal(metric(daemon, "registry_canary_budget_sufficient"), 0.0), WAIT
            )
            (logged,) = daemon.events("budget_insufficient")
            assert logged["key"] == "defaults.budget.bytes_per_hour"
            assert "needs" in logged["reason"]
        finally:
            factory.stop_all()


class TestMeasure:
    def test_check_config_measure(self, registry: LocalRegistry, tmp_path: Path) -> None:
        """`check-config --measure` reads the manifests, names the budget key with the bytes per
        hour it would need and exits 2 when the budget is short; it exits 0 when it is not."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES)))
        enough = write_config(tmp_path, budgeted(registry.url, "1h"), name="enough.yaml")
        done = run_cli("check-config", str(enough), "--measure")
        assert done.returncode == 0, done.stderr
        assert f"local: {len(layer_sizes())} layers under blob_check: budget" in done.stdout

        short = write_config(tmp_path, budgeted(registry.url, "2m"), name="short.yaml")
        done = run_cli("check-config", str(short), "--measure")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "defaults.budget.bytes_per_hour: full verification of 6 layers" in done.stderr
        assert "needs at least" in done.stderr

        assert run_cli("check-config", str(short)).returncode == 0  # sizes unknown without it


def _equal(found: Any, expected: Any) -> Any:
    assert found == expected
    return found
