"""`make demo` runs end to end on the real registry and shows the incident being caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from canary.testbed import free_port
from tests.conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.registry


def test_demo_shows_healthy_then_incident() -> None:
    """The first probe of the demo passes; the one after the injected incident fails."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "canary.demo",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--run-for",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 image pulls verified, 0 failed" in done.stdout
    assert "3 of 4 image pulls verified, 1 failed" in done.stdout
    assert "local canary/alpine:2023-05: blob_unknown" in done.stdout
    assert "exit status: healthy run 0, after the incident 1" in done.stdout
    # Then the daemon ran on the broken registry and logged the failing pull as JSON.
    probed = [json.loads(line) for line in done.stdout.splitlines() if '"image_probed"' in line]
    assert any(
        p["repository"] == "canary/alpine" and p["outcome"] == "blob_unknown" for p in probed
    )
    assert any(p["repository"] == "canary/busybox" and p["outcome"] == "ok" for p in probed)


def test_probe_with_bad_config_exits_2(tmp_path: Path) -> None:
    """`probe` refuses an invalid config with exit 2 and the dotted location of the problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "environments: [{name: a, url: 'ftp://x'}]\nimages: [{repository: a/b, tag: '1'}]\n"
    )
    done = run_cli("probe", "--config", str(bad))
    assert done.returncode == 2
    assert "environments.0.url: 'ftp://x' is not an http(s) URL" in done.stderr
