"""`make demo` runs end to end on the real registry and shows the incident being caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.registry


def test_demo_shows_healthy_then_incident() -> None:
    """The first probe of the demo passes; the one after the injected incident fails."""
    done = subprocess.run(
        [sys.executable, "-m", "canary.demo"],
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


def test_probe_with_bad_config_exits_2(tmp_path: Path) -> None:
    """`probe` refuses an invalid config with exit 2 and the dotted location of the problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "environments: [{name: a, url: 'ftp://x'}]\nimages: [{repository: a/b, tag: '1'}]\n"
    )
    done = run_cli("probe", "--config", str(bad))
    assert done.returncode == 2
    assert "environments.0.url: 'ftp://x' is not an http(s) URL" in done.stderr
