"""A real runtime to compare the canary with: Debian's containerd on a socket of its own, and
`ctr content fetch`, which pulls an image's content as a runtime does (no unpacking)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.oci_tools import ToolError, run_tool

CONTAINERD = "containerd"
CTR = "ctr"
START_SECONDS = 15.0
FETCH_TIMEOUT = 60.0

_CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
# Content one namespace fetched is never lent to another: each fetch downloads what it needs.
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"""


@dataclass
class Fetched:
    """What `ctr content fetch` made of one reference."""

    ok: bool
    output: str


class Containerd:
    """containerd with its root, state and socket under one folder, listening on nothing else."""

    def __init__(self, root: Path) -> None:
        if shutil.which(CONTAINERD) is None or shutil.which(CTR) is None:
            raise ToolError("containerd is not installed (Debian package containerd)")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._fetches = 0
        self.socket = root / "containerd.sock"
        config = root / "config.toml"
        config.write_text(_CONFIG.format(root=root))
        self.log = root / "containerd.log"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [CONTAINERD, "--config", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_SECONDS
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ToolError(f"containerd did not start; see {self.log}")
            time.sleep(0.05)

    def _ctr(self, *args: str) -> bytes:
        return run_tool([CTR, "--address", str(self.socket), *args], timeout=FETCH_TIMEOUT)

    def _answers(self) -> bool:
        try:
            self._ctr("version")
        except ToolError:
            return False
        return True

    def fetch(self, reference: str, platform: str | None = None) -> Fetched:
        """`ctr content fetch` of `reference` (host:port/repo:tag) over plain HTTP into a new
        namespace, whose content store is empty, so nothing fetched before can stand in for
        what the registry serves now."""
        self._fetches += 1
        namespace = f"fetch-{self._fetches}"
        chosen = ["--platform", platform] if platform else []
        try:
            output = self._ctr(
                "--namespace", namespace, "content", "fetch", "--plain-http", *chosen, reference
            )
        except ToolError as exc:
            return Fetched(False, str(exc))
        return Fetched(True, output.decode(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
