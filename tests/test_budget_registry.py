"""blob_check: budget against the real registry: a HEAD for every layer each round, full
downloads within the budget, its metrics in the daemon, and `check-config --measure`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from canary.budget import format_bytes, required_bytes_per_hour
from canary.config import Image
from canary.seed import synthesize
from canary.testbed import LocalRegistry
from tests.conftest import catalog, probe_json, run_cli, seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, daemon_catalog, equal, eventually

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


def too_small(full_verify_within: str, seconds: float, cycle: float) -> str:
    """What the daemon and `check-config --measure` say of BUDGET for the seeded layers, to be
    verified within `full_verify_within` (`seconds`) with each image pulled every `cycle`."""
    sizes = layer_sizes()
    required = required_bytes_per_hour(sum(sizes.values()), max(sizes.values()), seconds, cycle)
    assert required is not None
    return (
        f"full verification of {len(sizes)} layers ({format_bytes(sum(sizes.values()))}) within "
        f"{full_verify_within} needs bytes_per_hour of at least {format_bytes(required)}; it is "
        f"{format_bytes(BUDGET)}"
    )


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
    def test_budget_metrics_and_the_byte_cap(
        self, registry: LocalRegistry, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """The daemon pulls every image on schedule, exports the budget, the measured catalog
        and the oldest verification age, and never downloads more than the budget allows."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES), name="seed.yaml"))
        sizes = layer_sizes()
        document = daemon_catalog(
            [{"name": "local", "url": registry.url}],
            IMAGES,
            blob_check="budget",
            budget={"bytes_per_hour": BUDGET, "full_verify_within": "1h"},
        )
        started = time.monotonic()
        daemon = daemons.start("canary", document)
        eventually(
            lambda: equal(
                metric(daemon, "registry_canary_budget_catalog_bytes"), float(sum(sizes.values()))
            ),
            WAIT,
        )
        assert metric(daemon, "registry_canary_budget_bytes_per_hour") == BUDGET
        assert metric(daemon, "registry_canary_budget_full_verify_within_seconds") == 3600
        assert metric(daemon, "registry_canary_budget_sufficient") == 1
        age = metric(daemon, "registry_canary_budget_oldest_full_verification_age_seconds")
        # No layer was seen before the daemon started.
        assert 0 <= age <= time.monotonic() - started
        verified = metric(daemon, "registry_canary_budget_verified_bytes_total")
        elapsed = time.monotonic() - started
        burst = max(max(sizes.values()), BUDGET / 60)
        assert 0 < verified <= burst + (BUDGET - burst) / 3600 * elapsed
        ok = {e["repository"] for e in daemon.events("image_probed") if e["outcome"] == "ok"}
        assert ok == {image["repository"] for image in IMAGES}
        _status, status = daemon.get_json("/status")
        budget = status["environments"][0]["budget"]
        assert budget["layers"] == len(sizes)
        assert budget["shortfall"] is None

    def test_a_budget_too_small_says_so(
        self, registry: LocalRegistry, tmp_path: Path, daemons: DaemonFactory
    ) -> None:
        """With full_verify_within shorter than the budget can cover, the daemon exports
        budget_sufficient 0 and logs the key to change with the numbers."""
        seed_images(write_config(tmp_path, catalog(registry.url, IMAGES), name="seed.yaml"))
        document = daemon_catalog(
            [{"name": "local", "url": registry.url}],
            IMAGES,
            blob_check="budget",
            budget={"bytes_per_hour": BUDGET, "full_verify_within": "2m"},
        )
        daemon = daemons.start("canary", document)
        eventually(lambda: equal(metric(daemon, "registry_canary_budget_sufficient"), 0.0), WAIT)
        (logged,) = daemon.events("budget_insufficient")
        assert logged["key"] == "defaults.budget.bytes_per_hour"
        # The cycle is the images' interval: 1 s, daemon_catalog's default.
        assert logged["reason"] == too_small("2m", 120.0, cycle=1.0)


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
        # The cycle is the images' interval: 60 s, the default, as catalog() sets none.
        expected = "  defaults.budget.bytes_per_hour: " + too_small("2m", 120.0, cycle=60.0)
        assert expected in done.stderr.splitlines(), done.stderr

        assert run_cli("check-config", str(short)).returncode == 0  # sizes unknown without it
