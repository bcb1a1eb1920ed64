"""Command-line usage errors: exit 2 with a message naming the problem, never a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import catalog, run_cli, write_config


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
