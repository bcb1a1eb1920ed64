"""`probe` as a deploy gate: JUnit reports, failure budgets and waiting for a rollout to heal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from canary.report import Progress
from canary.testbed import LocalRegistry
from tests.conftest import REPO_ROOT, catalog, probe_json, run_cli, seed_images, write_config
from tests.test_junit import image

SCHEMA = Path(__file__).parent / "schemas" / "junit-10.xsd"
IMAGES = [
    {"repository": "canary/alpine", "tag": "2023-05"},
    {"repository": "canary/busybox", "tag": "1.36"},
    {"repository": "canary/debian", "tag": "12"},
]
BROKEN = "canary/alpine"
SEED = ("--layers", "2", "--layer-size", "8KiB")


def junit_cases(path: Path) -> list[ET.Element]:
    """The test cases of a report file, after asserting that the vendored XSD accepts it."""
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(path))
    root = ET.parse(path).getroot()  # noqa: S314 - a report this test just had written
    return list(root.iter("testcase"))


def attempts_by_repository(results: list[dict[str, Any]]) -> dict[str, int]:
    return {r["repository"]: r["attempts"] for r in results}


@pytest.fixture
def seeded(registry: LocalRegistry, tmp_path: Path) -> Path:
    """Three seeded images in one environment, and the catalog file naming them."""
    config = write_config(tmp_path, catalog(registry.url, IMAGES))
    seed_images(config, *SEED)
    return config


@pytest.fixture
def broken(registry: LocalRegistry, seeded: Path) -> list[str]:
    """The digests of canary/alpine's config and layers, whose blob links are then removed."""
    status, results = probe_json(seeded)
    assert status == 0, results
    alpine = next(r for r in results if r["repository"] == BROKEN)
    registry.remove_layer_links(BROKEN)
    return [b["digest"] for b in alpine["blobs"]]


@pytest.mark.registry
class TestJUnitReport:
    def test_failed_pull_is_one_failed_case(
        self, seeded: Path, broken: list[str], tmp_path: Path
    ) -> None:
        """Exit 1, and a valid report with 3 cases of which 1 failed blob_unknown naming every
        blob digest; the file replaces an old one and the table still goes to stdout."""
        report = tmp_path / "report.xml"
        report.write_text("stale")
        done = run_cli(
            "probe", "--config", str(seeded), "--format", "junit", "--output", str(report)
        )
        assert done.returncode == 1, done.stderr
        cases = junit_cases(report)
        assert sorted(c.get("name") for c in cases) == [
            "canary/alpine:2023-05",
            "canary/busybox:1.36",
            "canary/debian:12",
        ]
        failures = [f for c in cases for f in c.iter("failure")]
        assert len(failures) == 1
        assert failures[0].get("type") == "blob_unknown"
        assert failures[0].get("message") == "blob_unknown: 3 of 3 blobs confirmed unknown"
        text = failures[0].text or ""
        assert len(broken) == 3
        for digest in broken:
            assert f" {digest}: blob_unknown via registry" in text
        assert "HTTP 404 BLOB_UNKNOWN" in text
        assert "FAIL blob_unknown" in done.stdout
        assert done.stdout.rstrip().endswith("2 of 3 image pulls verified, 1 failed")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.xml")] == []

    def test_json_output_file(self, seeded: Path, tmp_path: Path) -> None:
        """--format json --output writes the JSON document to the file and the table to stdout."""
        report = tmp_path / "report.json"
        done = run_cli(
            "probe", "--config", str(seeded), "--format", "json", "--output", str(report)
        )
        assert done.returncode == 0, done.stderr
        assert [r["ok"] for r in json.loads(report.read_text())] == [True, True, True]
        assert done.stdout.startswith("ENVIRONMENT")


@pytest.mark.registry
class TestFailureBudget:
    @pytest.mark.parametrize(
        ("flags", "expected"),
        [
            ((), 1),
            (("--require-all",), 1),
            (("--max-failures", "1"), 0),
            (("--max-failures", "0"), 1),
            (("--max-failures", "5"), 0),
        ],
    )
    def test_exit_status_follows_the_budget(
        self, seeded: Path, broken: list[str], flags: tuple[str, ...], expected: int
    ) -> None:
        """With one of three pulls failed, the exit status is 1 unless the budget allows one."""
        done = run_cli("probe", "--config", str(seeded), *flags)
        assert done.returncode == expected, done.stdout + done.stderr
        assert "FAIL blob_unknown" in done.stdout


class TestUsageErrors:
    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (("--require-all", "--max-failures", "1"), "not allowed with argument"),
            (("--max-failures", "-1"), "--max-failures: -1 is negative"),
            (("--max-failures", "1.5"), "--max-failures: invalid int value"),
            (("--max-failures", "few"), "--max-failures: invalid int value"),
            (("--wait-until-healthy", "soon"), "--wait-until-healthy: 'soon' is not a duration"),
            (("--wait-until-healthy", "0s"), "--wait-until-healthy: a duration must be longer"),
            (("--output", "/nonexistent-folder/report.xml"), "--output: /nonexistent-folder"),
        ],
    )
    def test_bad_gate_flags_exit_2(
        self, tmp_path: Path, flags: tuple[str, ...], message: str
    ) -> None:
        """A gate flag that cannot be obeyed is a usage error naming the flag, before probing."""
        config = write_config(
            tmp_path, catalog("http://127.0.0.1:1", [{"repository": "a/b", "tag": "1"}])
        )
        done = run_cli("probe", "--config", str(config), *flags, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == ""


@pytest.mark.registry
class TestWaitUntilHealthy:
    def test_repaired_image_passes_after_retries(
        self, seeded: Path, broken: list[str], tmp_path: Path
    ) -> None:
        """Re-pushing the broken image during the wait ends it with exit 0; only the broken
        image was probed again."""
        report = tmp_path / "report.json"
        probe = subprocess.Popen(
            [
                *(sys.executable, "-m", "canary", "probe", "--config", str(seeded)),
                *("--format", "json", "--output", str(report), "--wait-until-healthy", "60s"),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Bounds the blocking readline below should the command hang.
        watchdog = threading.Timer(120, probe.kill)
        watchdog.start()
        try:
            assert probe.stderr is not None
            # Repair only once the first attempt has failed, so that attempt cannot see it whole.
            first_retry = probe.stderr.readline()
            assert first_retry.startswith("attempt 2 of the 1 failing image in 2s"), first_retry
            seed_images(seeded, *SEED, "--repush")
            stdout, stderr = probe.communicate(timeout=120)
        finally:
            watchdog.cancel()
            if probe.poll() is None:
                probe.kill()
                probe.communicate()
        assert probe.returncode == 0, first_retry + stderr
        results = json.loads(report.read_text())
        assert all(r["ok"] for r in results)
        attempts = attempts_by_repository(results)
        retries = [
            line for line in (first_retry + stderr).splitlines() if line.startswith("attempt ")
        ]
        assert attempts[BROKEN] == 1 + len(retries), first_retry + stderr
        assert attempts["canary/busybox"] == attempts["canary/debian"] == 1
        assert "ATTEMPTS" in stdout.splitlines()[0]

    def test_image_that_stays_broken_fails_when_time_is_up(
        self, seeded: Path, broken: list[str], tmp_path: Path
    ) -> None:
        """A broken image still broken at the deadline exits 1, its attempts in the report."""
        report = tmp_path / "report.xml"
        done = run_cli(
            "probe",
            "--config",
            str(seeded),
            "--format",
            "junit",
            "--output",
            str(report),
            "--wait-until-healthy",
            "3s",
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        retries = [line for line in done.stderr.splitlines() if line.startswith("attempt ")]
        assert retries[0].startswith("attempt 2 of the 1 failing image in 2s")
        outs = {c.get("name"): c.findtext("system-out", "") for c in junit_cases(report)}
        assert f"attempts: {len(retries) + 1}" in outs["canary/alpine:2023-05"].splitlines()
        assert "attempts: 1" in outs["canary/busybox:1.36"].splitlines()

    def test_healthy_catalog_needs_one_attempt(self, seeded: Path) -> None:
        """When the first attempt passes the gate, the command exits 0 without waiting."""
        status, results = probe_json(seeded, "--wait-until-healthy", "10m")
        assert status == 0
        assert set(attempts_by_repository(results).values()) == {1}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_retry_progress_names_the_attempt(self) -> None:
        """On a terminal, the progress line of a retry says which attempt it is."""
        stream = _Terminal()
        progress = Progress(3, stream, attempt=2)
        progress(image())
        assert stream.getvalue() == "\rattempt 2: probing: 1/3 done, 0 failed "

    def test_first_attempt_progress_is_unchanged(self) -> None:
        """The first attempt's progress line does not mention attempts."""
        stream = _Terminal()
        Progress(3, stream)(image())
        assert stream.getvalue() == "\rprobing: 1/3 done, 0 failed "
