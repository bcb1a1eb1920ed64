"""How fast and how lean is a verified pull? The canary against curl (the wire) and skopeo.

Run by `make bench`. It starts a real registry on loopback, seeds two catalogs of synthetic
images (incompressible layers), and in one run times, round-robin, best and median of N:

- the canary: `python -m canary probe --format json`, a child process that GETs and hashes
  every config and layer blob, 4 at a time (the environment's concurrency);
- curl: exactly the same blobs to /dev/null, 4 at a time, no hashing: what the wire allows;
- curl | openssl sha256: the same blobs, 4 at a time, each hashed with the OpenSSL SHA-256
  that Python's hashlib uses too: what any verifying client needs at the least (information);
- skopeo: `skopeo copy docker://... dir:...` of each image, one after another and all at
  once; the faster of the two is the one compared.

Every child's CPU seconds are its own (wait4) and so is its peak RSS (GNU time's %M). The probe
is run again on a catalog with small layers: peak memory should not grow with the blob size.

This is a benchmark, not a test: it exits 1 only when a tool fails, never for a missed target.
The figures are printed and written as JSON to .bench/pull.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from common import (
    MIB,
    REPO_ROOT,
    RSS_SOURCE,
    USE_GNU_TIME,
    BenchError,
    Run,
    canary_cli,
    run_benchmark,
    run_in_turn,
    run_one,
    run_together,
    seed_entries,
    tool_version,
    verdict,
)

from canary.schema import parse_size
from canary.testbed import LocalRegistry, start_registry

OUTPUT = REPO_ROOT / ".bench" / "pull.json"
CONCURRENCY = 4
SMALL_LAYER_SIZE = "4MiB"
PROBE_TIMEOUT = "300s"

# Targets: canary/curl at most this; skopeo/canary at least this; the RSS ratio within this of 1.
CURL_RATIO_MAX = 1.5
SKOPEO_RATIO_MIN = 3.0
RSS_RATIO_TOLERANCE = 0.2

Blob = tuple[str, str, int]  # repository, digest, bytes


# The catalogs, and what each tool runs.


def repositories(prefix: str, count: int) -> list[str]:
    names = string.ascii_lowercase
    return [f"{prefix}/{names[i] if i < len(names) else f'image{i}'}" for i in range(count)]


def catalog(url: str, images: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "defaults": {"timeout": PROBE_TIMEOUT, "blob_check": "get"},
        "environments": [{"name": "local", "url": url, "concurrency": CONCURRENCY}],
        "images": images,
    }


@dataclass(frozen=True, slots=True)
class Seeded:
    config: Path
    repositories: list[str]
    seed_seconds: float


def seed_catalog(
    registry: LocalRegistry, root: Path, prefix: str, images: int, layers: int, layer_size: str
) -> Seeded:
    """Seed a catalog and write it with the digest pins `seed` printed."""
    repos = repositories(prefix, images)
    seeded = seed_entries(registry.url, root / f"seed-{prefix}", repos, layers, layer_size)
    config = root / f"{prefix}.yaml"
    config.write_text(yaml.safe_dump(catalog(registry.url, seeded.entries), sort_keys=False))
    return Seeded(config=config, repositories=repos, seed_seconds=seeded.seed_seconds)


@dataclass(frozen=True, slots=True)
class Probe:
    run: Run
    blobs: list[Blob]  # every blob the probe verified
    pull_seconds: float  # first image started to last image finished, inside the child


def probe(config: Path, workdir: Path, expected_blobs: int) -> Probe:
    run = run_one(canary_cli("probe", "--config", str(config), "--format", "json"), workdir)
    run.check("the canary probe")
    results = json.loads(run.children[0].stdout)
    blobs = []
    begin, end = float("inf"), 0.0
    for image in results:
        if not image["ok"]:
            raise BenchError(f"the probe of {image['repository']} ended {image['outcome']}")
        started = datetime.fromisoformat(image["started_at"]).timestamp()
        begin, end = min(begin, started), max(end, started + image["duration_seconds"])
        blobs += [(image["repository"], b["digest"], b["bytes"]) for b in image["blobs"]]
    if len(blobs) != expected_blobs:
        raise BenchError(f"the probe verified {len(blobs)} blobs, not {expected_blobs}")
    return Probe(run=run, blobs=blobs, pull_seconds=end - begin)


def blob_url(url: str, blob: Blob) -> str:
    return f"{url}/v2/{blob[0]}/blobs/{blob[1]}"


def curl_command(url: str, blobs: list[Blob]) -> list[str]:
    argv = ["curl", "--silent", "--show-error", "--fail", "--parallel"]
    argv += ["--parallel-max", str(CONCURRENCY), "--write-out", "%{http_code} %{size_download}\\n"]
    for blob in blobs:
        argv += ["-o", "/dev/null", blob_url(url, blob)]
    return argv


def check_curl(run: Run, blobs: list[Blob]) -> None:
    run.check("curl")
    lines = run.children[0].stdout.split()
    codes, sizes = lines[0::2], [int(size) for size in lines[1::2]]
    total = sum(size for _, _, size in blobs)
    if set(codes) != {"200"} or len(sizes) != len(blobs) or sum(sizes) != total:
        raise BenchError(f"curl fetched {sum(sizes)} bytes in {len(sizes)} blobs, not {total}")


# Each of CONCURRENCY workers fetches its share of the blobs in turn, hashing as it reads.
_HASH_WORKER = 'for u do curl -sSf "$u" | openssl dgst -sha256 -r; done'


def wire_hash_commands(url: str, blobs: list[Blob]) -> list[list[str]]:
    return [
        ["sh", "-c", _HASH_WORKER, "wire-hash", *(blob_url(url, b) for b in blobs[i::CONCURRENCY])]
        for i in range(CONCURRENCY)
    ]


def check_wire_hash(run: Run, blobs: list[Blob]) -> None:
    run.check("curl | openssl")
    for i, child in enumerate(run.children):
        hashed = [f"sha256:{line.split()[0]}" for line in child.stdout.splitlines() if line]
        expected = [digest for _, digest, _ in blobs[i::CONCURRENCY]]
        if hashed != expected:
            raise BenchError(f"curl | openssl hashed {hashed}, not {expected}")


def skopeo_commands(port: int, repos: list[str], into: Path) -> list[list[str]]:
    return [
        [
            "skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
            f"docker://127.0.0.1:{port}/{repo}:v1", f"dir:{into / repo.replace('/', '-')}",
        ]
        for repo in repos
    ]  # fmt: skip


def check_skopeo(run: Run, into: Path, total: int) -> None:
    run.check("skopeo")
    copied = sum(path.stat().st_size for path in into.rglob("*") if path.is_file())
    if copied < total:
        raise BenchError(f"skopeo wrote {copied} bytes under {into}, less than the {total} seeded")


# Figures.


def summary(label: str, runs: list[Run], total_bytes: int) -> dict[str, Any]:
    walls = [run.wall_seconds for run in runs]
    best, median = min(walls), statistics.median(walls)
    rss = [run.max_rss_kib for run in runs]
    return {
        "label": label,
        "bytes": total_bytes,
        "best_seconds": round(best, 4),
        "median_seconds": round(median, 4),
        "samples_seconds": [round(w, 4) for w in walls],
        "best_mib_per_second": round(total_bytes / MIB / best, 1),
        "median_mib_per_second": round(total_bytes / MIB / median, 1),
        "cpu_seconds_median": round(
            statistics.median(run.user_seconds + run.sys_seconds for run in runs), 3
        ),
        "user_seconds_median": round(statistics.median(run.user_seconds for run in runs), 3),
        "sys_seconds_median": round(statistics.median(run.sys_seconds for run in runs), 3),
        "max_rss_kib_min": min(rss),
        "max_rss_kib_median": int(statistics.median(rss)),
        "max_rss_kib_max": max(rss),
    }


TIME_STATS = ("best_seconds", "median_seconds")
RSS_STATS = ("max_rss_kib_min", "max_rss_kib_median")


def ratio(
    label: str,
    top: float | tuple[float, float],
    bottom: dict[str, Any],
    stats: tuple[str, str],
    target: str = "-",
    ok: Callable[[float], bool] | None = None,
) -> dict[str, Any]:
    """top/bottom for the best and the median runs; a target is judged on the best."""
    tops = top if isinstance(top, tuple) else (top, top)
    best, median = (t / float(bottom[stat]) for t, stat in zip(tops, stats, strict=True))
    return {
        "label": label,
        "best": round(best, 3),
        "median": round(median, 3),
        "target": target,
        "ok": None if ok is None else ok(best),
    }


def rss_flat(value: float) -> bool:
    return abs(value - 1) <= RSS_RATIO_TOLERANCE


def stats_of(figures: dict[str, Any], stats: tuple[str, str]) -> tuple[float, float]:
    return float(figures[stats[0]]), float(figures[stats[1]])


def report(figures: dict[str, Any]) -> str:
    p = figures["parameters"]
    tools = figures["tools"]
    labels = [tools[row]["label"] for row in figures["table"]]
    width = max(len(label) for label in labels + [r["label"] for r in figures["ratios"].values()])
    width += 2
    lines = [
        f"registry-canary pull benchmark: {p['images']} images × {p['layers']} layers × "
        f"{p['layer_size']} = {p['blob_bytes'] / MIB:.1f} MiB in {p['blobs']} blobs, "
        f"{CONCURRENCY} at a time; best and median of {p['repeat']}, run round-robin",
        "",
        f"{'tool':<{width}}{'best s':>8}{'median s':>10}{'MiB/s':>8}"
        f"{'CPU s':>8}{'user':>7}{'sys':>7}{'max RSS MiB':>13}",
    ]
    for row in figures["table"]:
        fig = tools[row]
        lines.append(
            f"{fig['label']:<{width}}{fig['best_seconds']:>8.3f}{fig['median_seconds']:>10.3f}"
            f"{fig['best_mib_per_second']:>8.0f}{fig['cpu_seconds_median']:>8.2f}"
            f"{fig['user_seconds_median']:>7.2f}{fig['sys_seconds_median']:>7.2f}"
            f"{fig['max_rss_kib_median'] / 1024:>13.1f}"
        )
    big = tools["canary"]
    lines += [
        "",
        f"canary: {big['bytes'] / MIB:.1f} MiB verified (sha256) per pull; the pull itself "
        f"took {big['pull_seconds_best']:.3f}s (median {big['pull_seconds_median']:.3f}s) of "
        "the child's time, the rest is interpreter start-up, imports and exit",
        f"skopeo compared: {tools['skopeo']['label']}",
        f"CPU and RSS: medians of the runs, the children's own (RSS from {RSS_SOURCE}; "
        "for a group of processes, its largest)",
        "",
        f"{'ratio':<{width}}{'best':>8}{'median':>10}   target",
    ]
    for item in figures["ratios"].values():
        lines.append(
            f"{item['label']:<{width}}{item['best']:>8.2f}{item['median']:>10.2f}   "
            f"{item['target']:<6} {verdict(item['ok'])}"
        )
    return "\n".join(lines) + "\n"


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    blob_count = args.images * (args.layers + 1)
    with_hash = shutil.which("openssl") is not None
    registry = start_registry(work / "registry")
    try:
        print(f"registry at {registry.url}; seeding (writes every layer once)", flush=True)
        big = seed_catalog(registry, work, "bench", args.images, args.layers, args.layer_size)
        small = seed_catalog(
            registry, work, "bench-small", args.images, args.layers, SMALL_LAYER_SIZE
        )
        # Warm-up: one pull of each catalog, which also says which blobs to hand to curl.
        blobs = probe(big.config, work / "warm", blob_count).blobs
        small_total = sum(
            size for _, _, size in probe(small.config, work / "warm-small", blob_count).blobs
        )
        total = sum(size for _, _, size in blobs)
        curl = curl_command(registry.url, blobs)
        check_curl(run_one(curl, work / "warm-curl"), blobs)
        wire_hash = wire_hash_commands(registry.url, blobs)

        runs: dict[str, list[Run]] = {}
        pulls: list[float] = []
        for rep in range(args.repeat):
            print(f"repetition {rep + 1} of {args.repeat}", flush=True)
            result = probe(big.config, work / f"canary-{rep}", blob_count)
            runs.setdefault("canary", []).append(result.run)
            pulls.append(result.pull_seconds)
            run = run_one(curl, work / f"curl-{rep}")
            check_curl(run, blobs)
            runs.setdefault("curl", []).append(run)
            if with_hash:
                run = run_together(wire_hash, work / f"wire-hash-{rep}")
                check_wire_hash(run, blobs)
                runs.setdefault("wire_hash", []).append(run)
            for mode, runner in (("sequential", run_in_turn), ("parallel", run_together)):
                into = work / f"skopeo-{mode}-{rep}"
                into.mkdir()
                commands = skopeo_commands(registry.port, big.repositories, into)
                run = runner(commands, work / f"skopeo-{mode}-{rep}-log")
                check_skopeo(run, into, total)
                runs.setdefault(f"skopeo_{mode}", []).append(run)
                shutil.rmtree(into)
            result = probe(small.config, work / f"small-{rep}", blob_count)
            runs.setdefault("canary_small_layers", []).append(result.run)
    finally:
        registry.stop()

    tools = {
        "canary": {
            **summary(f"canary probe, {args.layer_size} layers", runs["canary"], total),
            "pull_seconds_best": round(min(pulls), 4),
            "pull_seconds_median": round(statistics.median(pulls), 4),
        },
        "curl": summary(f"curl, {CONCURRENCY} at a time, to /dev/null", runs["curl"], total),
        "skopeo_sequential": summary(
            "skopeo copy, one image at a time", runs["skopeo_sequential"], total
        ),
        "skopeo_parallel": summary(
            f"skopeo copy, {args.images} images at once", runs["skopeo_parallel"], total
        ),
        "canary_small_layers": summary(
            f"canary probe, {SMALL_LAYER_SIZE} layers", runs["canary_small_layers"], small_total
        ),
    }
    table = ["canary", "curl", "skopeo_sequential", "skopeo_parallel", "canary_small_layers"]
    if with_hash:
        label = f"curl | openssl sha256, {CONCURRENCY} at a time"
        tools["wire_hash"] = summary(label, runs["wire_hash"], total)
        table.insert(2, "wire_hash")
    faster = min(("skopeo_sequential", "skopeo_parallel"), key=lambda k: tools[k]["best_seconds"])
    tools["skopeo"] = {**tools[faster], "label": f"{tools[faster]['label']} (the faster)"}

    canary, curl_figures = tools["canary"], tools["curl"]
    ratios = {
        "canary_over_curl": ratio(
            "canary time / curl time", stats_of(canary, TIME_STATS), curl_figures, TIME_STATS,
            f"≤ {CURL_RATIO_MAX:g}", lambda r: r <= CURL_RATIO_MAX,
        ),
        "skopeo_over_canary": ratio(
            "skopeo time / canary time", stats_of(tools["skopeo"], TIME_STATS), canary,
            TIME_STATS, f"≥ {SKOPEO_RATIO_MIN:g}", lambda r: r >= SKOPEO_RATIO_MIN,
        ),
        "rss_big_over_small": ratio(
            f"max RSS, {args.layer_size} / {SMALL_LAYER_SIZE} layers",
            stats_of(canary, RSS_STATS), tools["canary_small_layers"], RSS_STATS,
            *(("≈ 1", rss_flat) if USE_GNU_TIME else ()),  # wait4's figures cannot say
        ),
        "canary_pull_over_curl": ratio(
            "canary pull alone (in-process) / curl",
            (canary["pull_seconds_best"], canary["pull_seconds_median"]), curl_figures,
            TIME_STATS,
        ),
    }  # fmt: skip
    if with_hash:
        ratios["canary_over_wire_hash"] = ratio(
            "canary time / curl | openssl time",
            stats_of(canary, TIME_STATS),
            tools["wire_hash"],
            TIME_STATS,
        )
    return {
        "parameters": {
            "images": args.images,
            "layers": args.layers,
            "layer_size": args.layer_size,
            "layer_bytes": parse_size(args.layer_size),
            "small_layer_size": SMALL_LAYER_SIZE,
            "blobs": blob_count,
            "blob_bytes": total,
            "concurrency": CONCURRENCY,
            "repeat": args.repeat,
            "seed_seconds": round(big.seed_seconds, 3),
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "platform": platform.platform(),
            "curl": tool_version(["curl", "--version"]),
            "skopeo": tool_version(["skopeo", "--version"]),
            "registry": tool_version(["docker-registry", "--version"]),
            "max_rss_from": RSS_SOURCE,
        },
        "tools": tools,
        "table": table,
        "ratios": ratios,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layer-size", default="32MiB", help="bytes per layer (default 32MiB)")
    parser.add_argument("--images", type=int, default=4, help="images per catalog (default 4)")
    parser.add_argument("--layers", type=int, default=4, help="layers per image (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per tool (default 3)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default {OUTPUT}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for option in ("images", "layers", "repeat"):
        if getattr(args, option) < 1:
            print(f"--{option} must be at least 1", file=sys.stderr)
            return 2
    try:
        parse_size(args.layer_size)
    except ValueError as exc:
        print(f"--layer-size: {exc}", file=sys.stderr)
        return 2
    return run_benchmark(
        ("curl", "skopeo"), "canary-bench-", args.output, lambda work: bench(args, work), report
    )


if __name__ == "__main__":
    sys.exit(main())
