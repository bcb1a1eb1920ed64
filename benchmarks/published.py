"""What do published-date sources cost a pull? CPU per image with and without GitLab's REST API.

Run by `make bench`. A real registry on loopback holds 200 small images (one 1 KiB layer), pulled
in `head` mode so that the pull itself is cheap and a date source's cost shows. A GitLab stand-in
(`benchmarks/gitlab_stub.py`) runs as its own process. In this process, with one long-lived
registry client and GitLab client as the daemon has, every image is pulled 8 at a time:

- reference: `published_sources: [config]`;
- `[config, gitlab_api]`, warm: repository ids already looked up (the daemon's steady state);
- `[config, gitlab_api]`, cold: the first round, which also lists each project's repositories.

Each is the best of 3 rounds of process CPU time (time.process_time), alternating. It writes
.bench/published.json and exits 1 only when something fails.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BenchError, images_main, seed_entries, verdict

from canary.config import Target, parse_config
from canary.probe import probe_image
from canary.published.gitlab import GitLabClient
from canary.registry.client import RegistryClient
from canary.results import ImageResult
from canary.testbed import free_port, start_registry

IMAGES = 200
ROUNDS = 3
CONCURRENCY = 8
OUTPUT = Path(".bench/published.json")
STUB = Path(__file__).with_name("gitlab_stub.py")


def targets(
    registry_url: str, gitlab_url: str, entries: list[dict[str, str]], gitlab: bool
) -> list[Target]:
    environment: dict[str, Any] = {
        "name": "local",
        "url": registry_url,
        "concurrency": CONCURRENCY,
        "published_sources": ["config", "gitlab_api"] if gitlab else ["config"],
    }
    if gitlab:
        environment["gitlab"] = {"url": gitlab_url, "token_env": "TOKEN"}
    document = {
        "defaults": {"blob_check": "head", "timeout": "30s"},
        "environments": [environment],
        "images": entries,
    }
    return list(parse_config(document, "bench", {"TOKEN": "t"}).targets())


async def pull_all(
    client: RegistryClient, gitlab: GitLabClient | None, chosen: list[Target]
) -> tuple[float, list[ImageResult]]:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(target: Target) -> ImageResult:
        async with slots:
            return await probe_image(client, target, gitlab)

    start = time.process_time()
    results = await asyncio.gather(*(one(t) for t in chosen))
    return time.process_time() - start, list(results)


def check(results: list[ImageResult], sources: int) -> None:
    for result in results:
        if not result.ok or len(result.published) != sources:
            raise BenchError(f"{result.repository}: pull {result.outcome}")
        bad = [p for p in result.published if p.status != "ok"]
        if bad:
            raise BenchError(
                f"{result.repository}: {bad[0].source} {bad[0].status} {bad[0].detail}"
            )


async def measure(
    registry_url: str, gitlab_url: str, entries: list[dict[str, str]]
) -> dict[str, Any]:
    plain = targets(registry_url, gitlab_url, entries, gitlab=False)
    dated = targets(registry_url, gitlab_url, entries, gitlab=True)
    settings = dated[0].environment.gitlab
    assert settings is not None
    async with RegistryClient(plain[0].environment) as client:
        gitlab = GitLabClient(settings)
        try:
            await pull_all(client, None, plain)  # warm the registry and the connection pool
            cold, results = await pull_all(client, gitlab, dated)
            check(results, 2)
            reference, warm = [], []
            for _ in range(ROUNDS):
                seconds, results = await pull_all(client, None, plain)
                check(results, 1)
                reference.append(seconds)
                seconds, results = await pull_all(client, gitlab, dated)
                check(results, 2)
                warm.append(seconds)
        finally:
            await gitlab.close()
    n = len(entries)
    return {
        "images": n,
        "reference_cpu_ms_per_image": min(reference) / n * 1000,
        "gitlab_warm_cpu_ms_per_image": min(warm) / n * 1000,
        "gitlab_cold_cpu_ms_per_image": cold / n * 1000,
        "warm_ratio": min(warm) / min(reference),
        "cold_ratio": cold / min(reference),
    }


def bench(images: int, work: Path) -> dict[str, Any]:
    with start_registry(work / "registry") as registry:
        repositories = [f"team/image-{i:04d}" for i in range(images)]
        seeded = seed_entries(registry.url, work / "seed", repositories, 1, "1KiB", processes=2)
        port = free_port()
        stub = subprocess.Popen(
            [sys.executable, str(STUB), str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            gitlab_url = f"http://127.0.0.1:{port}"
            _wait_listening(port, stub)
            return asyncio.run(measure(registry.url, gitlab_url, seeded.entries))
        finally:
            stub.terminate()
            stub.wait(timeout=30)


def _wait_listening(port: int, stub: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if stub.poll() is not None:
            raise BenchError("the GitLab stand-in exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError("the GitLab stand-in did not listen")


def report(f: dict[str, Any]) -> str:
    per_image = "CPU ms per image"
    warm, cold = f["warm_ratio"], f["cold_ratio"]
    return (
        f"published dates, {f['images']} images in head mode, {CONCURRENCY} at a time\n"
        f"  [config] (reference)              {f['reference_cpu_ms_per_image']:6.2f} {per_image}\n"
        f"  [config, gitlab_api], warm cache  {f['gitlab_warm_cpu_ms_per_image']:6.2f} {per_image}"
        f"  ({warm:.2f}× the reference; target ≤ 1.5×: {verdict(warm <= 1.5)})\n"
        f"  [config, gitlab_api], first round {f['gitlab_cold_cpu_ms_per_image']:6.2f} {per_image}"
        f"  ({cold:.2f}× the reference, {verdict(None)})\n"
    )


def main() -> int:
    return images_main(
        __doc__, IMAGES, OUTPUT, ("docker-registry",), "canary-bench-published-", bench, report
    )


if __name__ == "__main__":
    sys.exit(main())
