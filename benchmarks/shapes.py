"""What does an old data shape cost? CPU per verified pull of a Docker schema 1 image and of a
nested index, against a schema 2 image with the same layers, in the same run.

Run by `make bench`. It starts the real registry on loopback (schema 1 pushes allowed), builds
one image with umoci, pushes it with skopeo as schema 2 and as schema 1 (the same layer blobs),
and pushes an index of an index of the schema 2 manifest. Then, round-robin, best of N, it pulls
each with `probe_image` in this process and reads the process CPU time of each pull; twice, with
large layers (hashing dominates) and with small ones (the per-request work dominates, which is
where schema 1's payload digest and the index's two extra manifests show). CPU per request says
whether a shape costs more than its extra requests.

This is a benchmark, not a test: it exits 1 only when a tool fails, never for a missed target.
The figures are printed and written as JSON to .bench/shapes.json.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import MIB, REPO_ROOT, BenchError, run_benchmark, verdict

from canary.config import Target, parse_config
from canary.probe import probe_image
from canary.registry.client import RegistryClient
from canary.registry.push import Blob, push_manifest
from canary.testbed import REGISTRY_BINARY, start_registry

OUTPUT = REPO_ROOT / ".bench" / "shapes.json"
REPEATS = 15
LAYERS = 4
SIZES = {"large": 8 * MIB, "small": 4 * 1024}
TARGET_RATIO = 1.2
CREATED = "2017-01-02T03:04:05Z"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SHAPES = ("schema 2", "schema 1", "nested index")


def _run(*argv: str) -> bytes:
    try:
        done = subprocess.run(argv, capture_output=True, check=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"{' '.join(argv[:3])}: {exc}") from exc
    return done.stdout


def build_layout(work: Path, layer_size: int) -> Path:
    """An OCI layout with one linux/amd64 image of LAYERS incompressible layers, by umoci."""
    layout, bundle = work / "layout", work / "bundle"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:v1")
    _run("umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle))
    for index in range(LAYERS):
        data = hashlib.shake_256(f"layer {index} of {layer_size}".encode()).digest(layer_size)
        (bundle / "rootfs" / f"layer-{index}.bin").write_bytes(data)
        _run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v1", str(bundle))
    platform = ["--os", "linux", "--architecture", "amd64", "--created", CREATED]
    _run("umoci", "config", "--no-history", "--image", f"{layout}:v1", *platform)
    return layout


def skopeo_push(layout: Path, port: int, repository: str, manifest_format: str) -> None:
    _run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--format",
        manifest_format,
        f"oci:{layout}:v1",
        f"docker://127.0.0.1:{port}/{repository}:v1",
    )


def _index(manifest: Blob, media_type: str, platform: dict[str, str] | None) -> Blob:
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": manifest.digest,
        "size": len(manifest.data),
    }
    if platform is not None:
        entry["platform"] = platform
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    return Blob(OCI_INDEX, body.encode())


def targets(url: str) -> dict[str, Target]:
    document = {
        "defaults": {"timeout": "300s", "blob_check": "get"},
        "environments": [{"name": "bench", "url": url, "concurrency": 4}],
        "images": [{"repository": repository, "tag": tag} for repository, tag in _ENTRIES],
    }
    found = parse_config(document, "bench").targets()
    return {shape: target for shape, target in zip(SHAPES, found, strict=True)}


# The nested index lives beside the schema 2 manifest it wraps, which holds the blobs.
_ENTRIES = (("shapes/schema2", "v1"), ("shapes/schema1", "v1"), ("shapes/schema2", "nested"))


async def prepare(shapes: dict[str, Target]) -> None:
    """Push an index of an index of the schema 2 manifest skopeo pushed, with the canary's
    writer, beside it."""
    target = shapes["schema 2"]
    async with RegistryClient(target.environment) as client:
        manifest = await client.get_manifest("shapes/schema2", "v1")
        leaf = Blob(OCI_MANIFEST, manifest.body)
        inner = _index(leaf, OCI_MANIFEST, {"os": "linux", "architecture": "amd64"})
        await push_manifest(client, "shapes/schema2", inner.digest, inner)
        await push_manifest(client, "shapes/schema2", "nested", _index(inner, OCI_INDEX, None))


async def pulls(shapes: dict[str, Target]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per shape, the CPU seconds of each of REPEATS pulls, taken round-robin, and how many
    requests one pull makes (manifests and blobs)."""
    environment = next(iter(shapes.values())).environment
    seconds: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    requests = {}
    async with RegistryClient(environment) as client:
        for shape, target in shapes.items():  # warm-up: connections and token
            warm = await probe_image(client, target)
            if not warm.ok or warm.verified_blobs != _expected_blobs(shape):
                raise BenchError(f"{shape}: {warm.outcome}, {warm.verified_blobs} blobs verified")
            requests[shape] = len(warm.manifests) + len(warm.blobs)
        for _ in range(REPEATS):
            for shape, target in shapes.items():
                start = time.process_time()
                result = await probe_image(client, target)
                seconds[shape].append(time.process_time() - start)
                if not result.ok:
                    raise BenchError(f"{shape}: {result.outcome}")
    return seconds, requests


def _expected_blobs(shape: str) -> int:
    # Schema 1 has no config blob; its layers are the same.
    return LAYERS if shape == "schema 1" else LAYERS + 1


def bench(work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"repeats": REPEATS, "layers": LAYERS}
    for size_name, layer_size in SIZES.items():
        folder = work / size_name
        folder.mkdir()
        layout = build_layout(folder, layer_size)
        with start_registry(folder / "registry", schema1=True) as registry:
            skopeo_push(layout, registry.port, "shapes/schema2", "v2s2")
            skopeo_push(layout, registry.port, "shapes/schema1", "v2s1")
            shapes = targets(registry.url)
            asyncio.run(prepare(shapes))
            seconds, requests = asyncio.run(pulls(shapes))
        best = {shape: min(values) for shape, values in seconds.items()}
        reference = best["schema 2"]
        per_request = {shape: best[shape] / requests[shape] for shape in SHAPES}
        figures[size_name] = {
            "layer_bytes": layer_size,
            "cpu_ms": {shape: value * 1000 for shape, value in best.items()},
            "ratio": {shape: value / reference for shape, value in best.items()},
            "requests": requests,
            "ratio_per_request": {
                shape: value / per_request["schema 2"] for shape, value in per_request.items()
            },
        }
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"old data shapes: CPU per verified pull, best of {figures['repeats']}, round-robin, "
        f"{figures['layers']} layers, real registry on loopback"
    ]
    for size_name in SIZES:
        entry = figures[size_name]
        size = entry["layer_bytes"]
        shown = f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"
        lines.append(f"  layers of {shown}")
        for shape in SHAPES:
            ratio = entry["ratio"][shape]
            judged = (
                ""
                if shape == "schema 2"
                else (f"  target ≤ {TARGET_RATIO}×: {verdict(ratio <= TARGET_RATIO)}")
            )
            requests = f"{entry['requests'][shape]} requests"
            if size_name == "small":  # where the requests, not the bytes, are the work
                requests += f", {entry['ratio_per_request'][shape]:.2f}× per request"
            lines.append(
                f"    {shape:<14} {entry['cpu_ms'][shape]:8.2f} CPU ms  ({ratio:.2f}×; "
                f"{requests}){judged}"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    return run_benchmark(
        (REGISTRY_BINARY, "skopeo", "umoci"), "canary-bench-shapes-", OUTPUT, bench, report
    )


if __name__ == "__main__":
    sys.exit(main())
