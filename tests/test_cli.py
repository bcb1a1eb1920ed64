"""Command-line usage errors: exit 2 with a message naming the problem, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, catalog, run_cli, write_config


def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    """`run` refuses a bad config before starting anything."""
    config = write_config(tmp_path, {"environments": [], "images": []})
    done = run_cli("run", "--config", str(config), timeout=30)
    assert done.returncode == 2
    assert "environments: list at least one of the environments" in done.stderr


def test_run_with_bad_listen_exits_2(tmp_path: Path) -> None:
    """A --listen that is not HOST:PORT is a usage error."""
    config = write_config(
        tmp_path, catalog("http://127.0.0.1:1", [{"repository": "a/b", "tag": "1"}])
    )
    done = run_cli("run", "--config", str(config), "--listen", "localhost", timeout=30)
    assert done.returncode == 2
    assert "--listen: 'localhost' is not HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_seed_bad_layer_size_exits_2(tmp_path: Path) -> None:
    """An unreadable --layer-size is a usage error naming the option."""
    config = write_config(
        tmp_path, catalog("http://127.0.0.1:1", [{"repository": "a/b", "tag": "1"}])
    )
    done = run_cli("seed", "--config", str(config), "--environment", "local", "--layer-size", "big")
    assert done.returncode == 2
    assert "--layer-size: 'big' is not a size" in done.stderr


def test_healthcheck_needs_only_the_standard_library() -> None:
    """`healthcheck` runs every 30 s in a container: it loads none of the daemon's stack."""
    script = (
        "import sys; from canary.cli import main; code = main(['healthcheck', '--listen', "
        "'127.0.0.1:1']); heavy = [m for m in ('aiohttp', 'pydantic', 'prometheus_client', "
        "'apscheduler', 'yaml') if m in sys.modules]; print(code, heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert done.stdout.strip() == "1 []", done.stdout + done.stderr
