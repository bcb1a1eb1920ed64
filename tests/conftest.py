"""Shared fixtures: the real registry on loopback, catalogs written for it, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from canary.config import Config, parse_config
from canary.testbed import LocalRegistry, start_registry

if TYPE_CHECKING:
    from tests.daemon_fixtures import DaemonFactory

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A fresh anonymous registry with an empty temporary storage root."""
    with start_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture
def no_delete_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry whose DELETE API is turned off, as many production registries have it."""
    with start_registry(tmp_path / "no-delete", delete=False) as running:
        yield running


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Starts daemons with their configs and logs in `tmp_path`; stops them all at teardown."""
    # Imported here: tests.daemon_fixtures imports this module.
    from tests.daemon_fixtures import DaemonFactory

    factory = DaemonFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def catalog(url: str, images: list[dict[str, Any]], **environment: Any) -> dict[str, Any]:
    """A config document with one environment named `local` at `url`."""
    return {
        "defaults": {"timeout": "20s", "recheck_delay": "100ms"},
        "environments": [{"name": "local", "url": url, **environment}],
        "images": images,
    }


def write_config(directory: Path, document: dict[str, Any], name: str = "canary.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def to_config(document: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(document, "test", environ or {})


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `registry-canary` as users do, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "canary", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
        check=False,
    )


def probe_json(
    config_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Run `probe --format json` and return its exit status and parsed results."""
    done = run_cli("probe", "--config", str(config_path), "--format", "json", *extra, env=env)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def seed_images(config_path: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    done = run_cli("seed", "--config", str(config_path), "--environment", "local", *extra, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout
