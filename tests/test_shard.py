"""Sharding: N replicas cover a catalog exactly once, the same way after every restart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from canary.shard import Shard, parse_shard
from tests.conftest import REPO_ROOT, to_config, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, daemon_catalog, eventually


def catalog_keys(images: int = 300, environments: int = 3) -> list[tuple[str, str, str]]:
    document = {
        "environments": [
            {"name": f"env{e}", "url": f"http://127.0.0.1:{5000 + e}"} for e in range(environments)
        ],
        "images": [{"repository": f"team/image-{i}", "tag": "v1"} for i in range(images)],
    }
    return [target.key for target in to_config(document).targets()]


class TestPartition:
    @pytest.mark.parametrize("count", [1, 2, 3, 7])
    def test_shards_partition_the_catalog_exactly(self, count: int) -> None:
        """Every entry belongs to exactly one of the N shards, and none is left out."""
        keys = catalog_keys()
        owners = [[i for i in range(count) if Shard(i, count).owns(key)] for key in keys]
        assert all(len(found) == 1 for found in owners)
        sizes = [sum(1 for found in owners if found == [i]) for i in range(count)]
        assert sum(sizes) == len(keys)
        # A hash spreads 900 entries evenly enough that no shard idles or carries double.
        assert min(sizes) > len(keys) / count / 2, sizes

    def test_assignment_is_the_same_in_another_process(self) -> None:
        """A restarted replica (a new process, a new hash seed) keeps exactly its entries."""
        keys = catalog_keys(60, 2)
        here = [key for key in keys if Shard(1, 3).owns(key)]
        script = (
            "import json, sys; from canary.shard import Shard; "
            "keys = [tuple(k) for k in json.load(sys.stdin)]; "
            "print(json.dumps([k for k in keys if Shard(1, 3).owns(k)]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
            check=True,
        )
        assert [tuple(k) for k in json.loads(done.stdout)] == here
        assert here  # the comparison means something only if the shard owns entries


class TestParse:
    def test_index_and_count(self) -> None:
        """INDEX/COUNT reads as written."""
        assert parse_shard("2/5") == Shard(2, 5)
        assert str(parse_shard(" 0/1 ")) == "0/1"

    def test_ordinal_comes_from_a_statefulset_hostname(self) -> None:
        """ordinal/N takes the index from the pod name StatefulSets give: canary-2 is shard 2."""
        assert parse_shard("ordinal/3", "registry-canary-2") == Shard(2, 3)

    @pytest.mark.parametrize(
        ("text", "hostname", "reason"),
        [
            ("3/3", "", "the shard index must be a number from 0 to 2, not '3'"),
            ("1", "", "'1' is not INDEX/COUNT, such as 0/3 or ordinal/3"),
            ("0/0", "", "'0/0' is not INDEX/COUNT, such as 0/3 or ordinal/3"),
            ("x/2", "", "the shard index must be a number from 0 to 1, not 'x'"),
            (
                "ordinal/2",
                "canary",
                "the hostname 'canary' ends in no -NUMBER to take the shard from",
            ),
            ("ordinal/2", "canary-5", "the shard index must be a number from 0 to 1, not '5'"),
        ],
    )
    def test_bad_shards_say_why(self, text: str, hostname: str, reason: str) -> None:
        """A shard that can't be used is refused with the reason."""
        with pytest.raises(ValueError, match="^" + re.escape(reason) + "$"):
            parse_shard(text, hostname)

    def test_cli_refuses_a_bad_shard_with_exit_2(self, tmp_path: Path) -> None:
        """`run --shard` with a bad value is a usage error, before anything starts."""
        config = write_config(
            tmp_path,
            daemon_catalog(
                [{"name": "a", "url": "http://127.0.0.1:9"}], [{"repository": "r", "tag": "t"}]
            ),
        )
        done = subprocess.run(
            [sys.executable, "-m", "canary", "run", "--config", str(config), "--shard", "2/2"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
        assert done.returncode == 2
        assert "--shard: the shard index must be a number from 0 to 1, not '2'" in done.stderr


def _probed_exactly(daemon: DaemonProcess, repositories: set[str]) -> None:
    pulled = {line["repository"] for line in daemon.events("image_probed")}
    assert pulled == repositories, (pulled, repositories)


@pytest.mark.registry
def test_two_daemons_split_the_catalog_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons on shards 0/2 and 1/2 of one catalog probe disjoint entries that together
    are the whole catalog, and /status says which shard each is."""
    images = [{"repository": f"team/image-{i}", "tag": "v1"} for i in range(12)]
    # A closed port: pulls fail fast, which is all this needs; the split is what is tested.
    document = daemon_catalog([{"name": "local", "url": "http://127.0.0.1:9"}], images)
    factory = DaemonFactory(tmp_path / "daemons")
    (tmp_path / "daemons").mkdir()
    try:
        seen: dict[str, set[str]] = {}
        for shard in ("0/2", "1/2"):
            monkeypatch.setenv("CANARY_SHARD", shard)
            daemon = factory.start(f"shard{shard[0]}", document)
            _, state = daemon.get_json("/status")
            assert state["shard"] == shard
            seen[shard] = {image["repository"] for image in state["images"]}

            eventually(lambda d=daemon, s=shard: _probed_exactly(d, seen[s]), timeout=20)
    finally:
        factory.stop_all()
    assert seen["0/2"].isdisjoint(seen["1/2"])
    assert seen["0/2"] | seen["1/2"] == {image["repository"] for image in images}
