"""How much does the daemon cost in steady state? CPU, request rate and memory of `run`.

Run by `make bench`. It starts a real registry on loopback and seeds a catalog of 1,000 small
images (one 1 KiB layer each, by several `seed` processes side by side), probed in
`blob_check: head` mode: a pull is three registry requests, the manifest GET, the config GET
and the layer HEAD. Then `python -m canary run` runs as a child process, three times:

- steady: the catalog every 10s, 8 requests at a time: 300 requests/s, which this 2-core
  machine keeps up with (the registry needs ~3 CPU ms a request here, ~0.9 of a core; at 5s
  the two together need more than the 2 cores and pulls are skipped). The figure is the
  daemon's CPU per registry request;
- saturated: the catalog every 2s, 1,500 requests/s asked for, more than can be done: every
  slot is always busy. The requests completed per second of wall time is the most the daemon
  achieves end to end; it is judged against 1,000/s;
- overloaded: the catalog every 500ms, for what a far too short interval does: each job fires
  twice a second, and a job whose previous pull is still queued is skipped
  (probes_skipped_total, and a warning line each). For information.

The registry's own ceiling is measured too: curl makes the same requests, 8 at a time, with no
verification and next to no CPU (best of 2).

A round ends when every entry's `registry_canary_image_last_probe_timestamp_seconds` has moved
past the round's start (the newest timestamp of the scrape that ended the previous round). All is
measured from outside: /metrics (polled) for requests, pulls, skips and failures, /proc/PID/stat
for CPU and /proc/PID/status for RSS (VmRSS) and its peak (VmHWM), sampled at round boundaries.
Round 1 includes the first pulls after start-up; rounds 2 to N are the steady state. Scraping
/metrics costs the daemon CPU too: the cost of one scrape is measured after the steady rounds
and the figure is given both with and without it.

This is a benchmark, not a test: it exits 1 only when something fails (a pull that is not ok,
the daemon exiting badly), never for a missed target. The figures are printed and written as
JSON to .bench/daemon.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from common import (
    REPO_ROOT,
    BenchError,
    SeededEntries,
    canary_cli,
    run_benchmark,
    run_one,
    seed_entries,
    tool_version,
    verdict,
    wait_exit,
)

from canary.config import Image
from canary.registry.media import ACCEPT
from canary.schema import parse_duration, parse_size
from canary.seed import synthesize
from canary.testbed import LocalRegistry, free_port, start_registry

OUTPUT = REPO_ROOT / ".bench" / "daemon.json"
IMAGES = 1000
LAYER_SIZE = "1KiB"
CONCURRENCY = 8
INTERVAL = "10s"
SATURATION_INTERVAL = "2s"
OVERLOAD_INTERVAL = "500ms"
ROUNDS = 5
SEEDERS = 4
POLL_SECONDS = 0.5
PULL_TIMEOUT = "30s"
REQUESTS_PER_PULL = 3  # manifest GET, config GET, layer HEAD (one layer per image)
START_SECONDS = 60.0  # the daemon answers /healthz within this, or the run fails
ROUND_SECONDS_MIN = 60.0  # a round fails after max(this, 6 intervals)
STOP_SECONDS = 30.0  # after SIGTERM the daemon exits within this (its grace period is 10s)
SCRAPE_SECONDS = 10.0
FIRST_POLL_FRACTION = 0.85  # of the round's expected length
MAX_POLL_SECONDS = 5.0
CALIBRATION_SCRAPES = 10
CURL_REPEAT = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Targets.
CPU_MS_PER_REQUEST_MAX = 1.0
REQUESTS_PER_SECOND_MIN = 1000.0
RSS_MIB_MAX = 80.0
RSS_FLAT_TOLERANCE = 0.10

PREFIX = "registry_canary_"


# The daemon, seen from outside.


@dataclass(frozen=True, slots=True)
class ProcessSample:
    cpu_seconds: float  # utime + stime of every thread
    rss_kib: int  # VmRSS
    hwm_kib: int  # VmHWM, the peak RSS so far


def process_sample(pid: int) -> ProcessSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0])  # kB
    return ProcessSample(cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one GET /metrics says about the catalog."""

    wall: float  # time.time() when the answer was in
    body_bytes: int
    # Every entry's last-probe timestamp (an entry not probed yet has none).
    probes: tuple[float, ...]
    pulls: int
    blob_fetches: int
    manifest_fetches: int
    failed_fetches: int  # blob or manifest fetches with an outcome other than ok
    failing_images: int  # image_pull_success 0
    skipped: int

    @property
    def requests(self) -> int:
        return self.blob_fetches + self.manifest_fetches

    @property
    def newest_probe(self) -> float:
        return max(self.probes, default=0.0)

    def behind(self, since: float, images: int) -> int:
        """How many of the catalog's entries have finished no pull after `since`."""
        return images - sum(1 for stamp in self.probes if stamp > since)


def parse_metrics(text: str, wall: float) -> Scrape:
    """Only the series the benchmark needs, read without a full parser (cheap for ~10^4 lines)."""
    stamps: list[float] = []
    counts = Counter[str]()
    failed = failing = 0.0
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        series, _, text_value = line.rpartition(" ")
        name = series.partition("{")[0].removeprefix(PREFIX)
        value = float(text_value)
        if name == "image_last_probe_timestamp_seconds":
            stamps.append(value)
        elif name in ("blob_fetches_total", "manifest_fetches_total"):
            counts[name] += int(value)
            if 'outcome="ok"' not in series:
                failed += value
        elif name in ("image_pull_duration_seconds_count", "probes_skipped_total"):
            counts[name] += int(value)
        elif name == "image_pull_success" and value == 0:
            failing += 1
    return Scrape(
        wall=wall,
        body_bytes=len(text),
        probes=tuple(stamps),
        pulls=counts["image_pull_duration_seconds_count"],
        blob_fetches=counts["blob_fetches_total"],
        manifest_fetches=counts["manifest_fetches_total"],
        failed_fetches=int(failed),
        failing_images=int(failing),
        skipped=counts["probes_skipped_total"],
    )


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    errors: Path
    scrapes: int = 0

    def scrape(self) -> Scrape:
        self.scrapes += 1
        url = f"{self.url}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_SECONDS) as answer:  # noqa: S310
            text = answer.read().decode()
        return parse_metrics(text, time.time())

    def sample(self) -> ProcessSample:
        return process_sample(self.process.pid)

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"the daemon exited with {self.process.returncode}:\n{tail(self.errors)}"
            )


def tail(path: Path, limit: int = 4000) -> str:
    return path.read_text(errors="replace").strip()[-limit:] if path.exists() else ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_daemon(config: Path, workdir: Path, log_level: str) -> Daemon:
    """`python -m canary run` on a free loopback port, once /healthz says it is running."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        log, errors = workdir / f"daemon-{attempt}.log", workdir / f"daemon-{attempt}.err"
        argv = canary_cli("run", "--config", str(config), "--listen", f"127.0.0.1:{port}")
        argv += ["--log-level", log_level]
        with log.open("wb") as out, errors.open("wb") as err:
            process = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
            )
        daemon = Daemon(process, f"http://127.0.0.1:{port}", log, errors)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(daemon.url):
                return daemon
            time.sleep(0.05)
        if process.poll() is None:
            stop_daemon(daemon)
            raise BenchError(f"the daemon did not become healthy in {START_SECONDS:g}s")
        # Most likely the port was taken between choosing and binding: try another.
    raise BenchError(f"the daemon did not start:\n{tail(errors)}")


def stop_daemon(daemon: Daemon) -> tuple[int, float]:
    """SIGTERM, and SIGKILL if it has not exited after STOP_SECONDS; exit status and seconds."""
    process = daemon.process
    start = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        if not wait_exit(process.pid, start + STOP_SECONDS):
            process.kill()
    returncode = process.wait(timeout=30)
    return returncode, time.monotonic() - start


# Rounds.


@dataclass(frozen=True, slots=True)
class Point:
    """The state at a round boundary."""

    at: float  # time.monotonic()
    daemon: ProcessSample
    registry_cpu_seconds: float
    scrape: Scrape
    scrapes: int  # /metrics requests made so far, this one included


def point(daemon: Daemon, registry: LocalRegistry, scrape: Scrape) -> Point:
    if registry.process.poll() is not None:
        raise BenchError(
            f"the registry exited with {registry.process.returncode}; see {registry.log}"
        )
    return Point(
        at=time.monotonic(),
        daemon=daemon.sample(),
        registry_cpu_seconds=process_sample(registry.process.pid).cpu_seconds,
        scrape=scrape,
        scrapes=daemon.scrapes,
    )


def wait_round(
    daemon: Daemon, since: float, images: int, expected: float, args: argparse.Namespace, n: int
) -> Scrape:
    """Poll /metrics until every entry finished a pull after `since` (a time.time()).

    A scrape of a big catalog costs the daemon CPU (it is measured), so the first poll waits for
    most of the `expected` round and later ones for the time the entries still behind should
    take at the round's pace so far: a round takes two or three scrapes, not one per poll."""
    start = time.monotonic()
    limit = max(ROUND_SECONDS_MIN, 6 * expected)
    time.sleep(max(args.poll, FIRST_POLL_FRACTION * expected))
    while True:
        daemon.alive()
        scrape = daemon.scrape()
        behind = scrape.behind(since, images)
        if behind == 0:
            return scrape
        elapsed = time.monotonic() - start
        if elapsed > limit:
            raise BenchError(
                f"round {n} did not finish in {limit:g}s: {behind} of {images} entries "
                "have finished no pull since the round began"
            )
        done = images - behind
        eta = behind * elapsed / done if done else expected - elapsed
        time.sleep(min(max(args.poll, eta), MAX_POLL_SECONDS))


def span(label: str, first: Point, last: Point) -> dict[str, Any]:
    """The figures between two round boundaries."""
    wall = last.at - first.at
    requests = last.scrape.requests - first.scrape.requests
    cpu = last.daemon.cpu_seconds - first.daemon.cpu_seconds
    return {
        "label": label,
        "wall_seconds": round(wall, 3),
        "pulls": last.scrape.pulls - first.scrape.pulls,
        "requests": requests,
        "requests_per_second": round(requests / wall, 1),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_request": round(1000 * cpu / requests, 4) if requests else None,
        "cpu_utilisation": round(cpu / wall, 3),
        "registry_cpu_seconds": round(last.registry_cpu_seconds - first.registry_cpu_seconds, 3),
        "skipped": last.scrape.skipped - first.scrape.skipped,
        "scrapes": last.scrapes - first.scrapes,
        "rss_kib_end": last.daemon.rss_kib,
        "hwm_kib_end": last.daemon.hwm_kib,
    }


def scrape_cost(daemon: Daemon, quiet_seconds: float) -> dict[str, Any]:
    """CPU seconds one /metrics scrape costs the daemon: a window without scrapes gives the
    background rate, then CALIBRATION_SCRAPES back to back; the excess over the rate is theirs."""
    start, before = time.monotonic(), daemon.sample().cpu_seconds
    time.sleep(quiet_seconds)
    middle, during = time.monotonic(), daemon.sample().cpu_seconds
    sizes = [daemon.scrape().body_bytes for _ in range(CALIBRATION_SCRAPES)]
    end, after = time.monotonic(), daemon.sample().cpu_seconds
    rate = (during - before) / (middle - start)
    excess = (after - during) - rate * (end - middle)
    return {
        "scrapes": CALIBRATION_SCRAPES,
        "background_cpu_utilisation": round(rate, 3),
        "cpu_ms_per_scrape": round(max(excess, 0.0) * 1000 / CALIBRATION_SCRAPES, 2),
        "wall_ms_per_scrape": round((end - middle) * 1000 / CALIBRATION_SCRAPES, 2),
        "body_bytes": max(sizes),
    }


def read_log(path: Path) -> Counter[str]:
    """How many log lines of each level and event the daemon wrote."""
    events = Counter[str]()
    with path.open(errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                events["(not JSON)"] += 1
                continue
            if isinstance(record, dict):
                events[f"{record.get('level')} {record.get('event')}"] += 1
    return events


def measure(
    mode: str,
    config: Path,
    registry: LocalRegistry,
    args: argparse.Namespace,
    interval: float,
    work: Path,
    calibrate: bool,
    shortest_round: float,
) -> dict[str, Any]:
    """Start the daemon on `config`, follow it for args.rounds rounds, stop it; the figures."""
    print(f"{mode}: starting the daemon (interval {interval:g}s)", flush=True)
    daemon = start_daemon(config, work / mode, args.log_level)
    failures: list[str] = []
    calibration = None
    try:
        ready = daemon.sample()
        points = [point(daemon, registry, daemon.scrape())]
        since = 0.0  # round 1: any pull counts
        expected = max(interval, shortest_round)
        for number in range(1, args.rounds + 1):
            scrape = wait_round(daemon, since, args.images, expected, args, number)
            points.append(point(daemon, registry, scrape))
            figures = span(f"round {number}", points[-2], points[-1])
            print(
                f"{mode}: round {number}: {figures['wall_seconds']:.2f}s, "
                f"{figures['requests']} requests, {figures['cpu_seconds']:.2f} CPU s, "
                f"RSS {figures['rss_kib_end'] / 1024:.1f} MiB",
                flush=True,
            )
            since = scrape.newest_probe
            expected = max(figures["wall_seconds"], shortest_round)
        if calibrate:
            calibration = scrape_cost(daemon, min(interval, 5.0))
        final = daemon.scrape()
        hwm = daemon.sample().hwm_kib
    finally:
        returncode, stop_seconds = stop_daemon(daemon)
    events = read_log(daemon.log)
    if returncode != 0:
        failures.append(f"{mode}: the daemon exited with {returncode} after SIGTERM")
    if final.failed_fetches or final.failing_images:
        failures.append(
            f"{mode}: {final.failed_fetches} fetches failed, {final.failing_images} images "
            "were failing at the end (see the daemon log)"
        )
    # Skips are what saturation means; in the steady run they say it was not steady after all
    # (a machine busy with something else), which the figures should be read with.
    normal = {"info started", "info image_probed", "info stopping", "info stopped"}
    normal.add("warning probe_skipped")
    surprises = {event: n for event, n in events.items() if event not in normal}
    if surprises:
        failures.append(f"{mode}: unexpected log lines {dict(surprises)}")
    if tail(daemon.errors):
        failures.append(f"{mode}: the daemon wrote to stderr:\n{tail(daemon.errors, 2000)}")
    notes = []
    if mode == "steady" and final.skipped:
        notes.append(
            f"steady: {final.skipped} probes were skipped: the daemon and the registry did not "
            f"keep up with the {interval:g}s schedule, so this run was not quite steady"
        )
    rounds = [span(f"round {i}", a, b) for i, (a, b) in enumerate(pairwise(points), 1)]
    steady_from = 1 if len(points) > 2 else 0
    return {
        "mode": mode,
        "interval_seconds": interval,
        "startup_cpu_seconds": round(ready.cpu_seconds, 3),
        "startup_rss_kib": ready.rss_kib,
        "rounds": rounds,
        "steady": span(f"rounds {steady_from + 1}-{args.rounds}", points[steady_from], points[-1]),
        "first_round_rss_kib": points[1].daemon.rss_kib,
        "last_round_rss_kib": points[-1].daemon.rss_kib,
        "peak_rss_kib": hwm,
        "pulls_total": final.pulls,
        "requests_total": final.requests,
        "blob_fetches_total": final.blob_fetches,
        "manifest_fetches_total": final.manifest_fetches,
        "failed_fetches": final.failed_fetches,
        "failing_images": final.failing_images,
        "probes_skipped_total": final.skipped,
        "metrics_bytes": final.body_bytes,
        "scrape_cost": calibration,
        "stop_seconds": round(stop_seconds, 3),
        "exit_status": returncode,
        "log_lines": dict(sorted(events.items())),
        "failures": failures,
        "notes": notes,
    }


# The registry alone: the same requests as a round of pulls, by curl.


def curl_config(url: str, entries: list[dict[str, str]]) -> str:
    """A curl config (-K) for one round's requests: manifests, configs, layer HEADs."""
    manifests, configs, layers = [], [], []
    for entry in entries:
        image = Image.model_validate({"repository": entry["repository"], "tag": entry["tag"]})
        synthetic = synthesize(image, 1, parse_size(LAYER_SIZE))
        if synthetic.digest != entry["digest"]:
            raise BenchError(
                f"{image.reference}: seed pinned {entry['digest']}, not {synthetic.digest}"
            )
        config, layer = synthetic.blobs
        base = f"{url}/v2/{image.repository}"
        manifests.append(f"{base}/manifests/{image.tag}")
        configs.append(f"{base}/blobs/{config.digest}")
        layers.append(f"{base}/blobs/{layer.digest}")
    groups = [
        ([f'header = "Accept: {ACCEPT}"'], manifests),
        ([], configs),
        (["head"], layers),
    ]
    lines = []
    for number, (options, urls) in enumerate(groups):
        if number:
            lines.append("next")
        lines += [*options, 'write-out = "%{http_code}\\n"']
        for address in urls:
            lines += [f'url = "{address}"', 'output = "/dev/null"']
    return "\n".join(lines) + "\n"


def registry_alone(
    registry: LocalRegistry, entries: list[dict[str, str]], concurrency: int, work: Path
) -> dict[str, Any]:
    """What the registry serves to a client that costs nothing: best of CURL_REPEAT runs."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "curl.cfg"
    config.write_text(curl_config(registry.url, entries))
    argv = ["curl", "--silent", "--show-error", "--parallel", "--parallel-max", str(concurrency)]
    argv += ["--config", str(config)]
    requests = REQUESTS_PER_PULL * len(entries)
    best: dict[str, Any] | None = None
    for attempt in range(CURL_REPEAT):
        before = process_sample(registry.process.pid).cpu_seconds
        run = run_one(argv, work / f"curl-{attempt}")
        registry_cpu = process_sample(registry.process.pid).cpu_seconds - before
        run.check("curl")
        codes = run.children[0].stdout.split()
        if len(codes) != requests or set(codes) != {"200"}:
            answered = dict(Counter(codes))
            raise BenchError(f"curl: {len(codes)} answers, not {requests}: {answered}")
        figures = {
            "label": f"curl, {concurrency} at a time",
            "requests": requests,
            "wall_seconds": round(run.wall_seconds, 3),
            "requests_per_second": round(requests / run.wall_seconds, 1),
            "curl_cpu_seconds": round(run.user_seconds + run.sys_seconds, 3),
            "registry_cpu_seconds": round(registry_cpu, 3),
            "registry_cpu_ms_per_request": round(1000 * registry_cpu / requests, 3),
        }
        if best is None or figures["wall_seconds"] < best["wall_seconds"]:
            best = figures
    assert best is not None
    return best


# The catalog.


def catalog(url: str, entries: list[dict[str, str]], interval: str, concurrency: int) -> Any:
    return {
        "defaults": {"interval": interval, "timeout": PULL_TIMEOUT, "blob_check": "head"},
        "environments": [{"name": "local", "url": url, "concurrency": concurrency}],
        "images": entries,
    }


def seed(registry: LocalRegistry, args: argparse.Namespace, work: Path) -> SeededEntries:
    repos = [f"bench/img-{i:04d}" for i in range(args.images)]
    print(
        f"registry at {registry.url}; seeding {args.images} images with {args.seeders} "
        "seed processes",
        flush=True,
    )
    seeded = seed_entries(registry.url, work / "seed", repos, 1, LAYER_SIZE, args.seeders)
    print(f"seeded in {seeded.seed_seconds:.1f}s", flush=True)
    return seeded


# Figures.


def check(
    label: str,
    value: float,
    unit: str,
    target: str = "-",
    ok: Callable[[float], bool] | None = None,
) -> dict[str, Any]:
    return {
        "label": label,
        "value": round(value, 4),
        "unit": unit,
        "target": target,
        "ok": None if ok is None else ok(value),
    }


def net_cpu_ms(span_figures: dict[str, Any], cost: dict[str, Any]) -> float:
    """CPU ms per request without the CPU of the /metrics scrapes made during the span."""
    scrapes_cpu = span_figures["scrapes"] * cost["cpu_ms_per_scrape"] / 1000
    return float(1000 * (span_figures["cpu_seconds"] - scrapes_cpu) / span_figures["requests"])


def checks(runs: dict[str, dict[str, Any] | None], curl: dict[str, Any]) -> dict[str, Any]:
    steady = runs["steady"]
    assert steady is not None
    s, cost = steady["steady"], steady["scrape_cost"]
    items: dict[str, Any] = {
        "steady_cpu_ms_per_request": check(
            f"steady: daemon CPU ms per request, {s['label']}", s["cpu_ms_per_request"], "ms",
            f"< {CPU_MS_PER_REQUEST_MAX:g}", lambda v: v < CPU_MS_PER_REQUEST_MAX,
        ),
    }  # fmt: skip
    if cost is not None:
        items["steady_cpu_ms_per_request_net"] = check(
            f"  the same without its {s['scrapes']} /metrics scrapes", net_cpu_ms(s, cost), "ms"
        )
    items["steady_requests_per_second"] = check(
        f"steady: requests/s (the schedule's: {REQUESTS_PER_PULL} × images / "
        f"{steady['interval_seconds']:g}s)",
        s["requests_per_second"],
        "/s",
    )
    items["registry_alone_requests_per_second"] = check(
        f"the registry alone: {curl['label']}, requests/s", curl["requests_per_second"], "/s"
    )
    for mode in ("saturated", "overloaded"):
        run = runs[mode]
        if run is None:
            continue
        r = run["steady"]
        rate = r["requests_per_second"]
        if mode == "saturated":
            items["saturated_requests_per_second"] = check(
                f"saturated: requests/s end to end, {r['label']}", rate, "/s",
                f"≥ {REQUESTS_PER_SECOND_MIN:g}", lambda v: v >= REQUESTS_PER_SECOND_MIN,
            )  # fmt: skip
        else:
            items[f"{mode}_requests_per_second"] = check(
                f"{mode}: requests/s end to end, {r['label']}", rate, "/s"
            )
        items[f"{mode}_over_registry_alone"] = check(
            f"  {mode} / the registry alone", rate / curl["requests_per_second"], ""
        )
        items[f"{mode}_skips_per_second"] = check(
            f"  {mode}: probes skipped per second", r["skipped"] / r["wall_seconds"], "/s"
        )
        items[f"{mode}_cpu_utilisation"] = check(
            f"  {mode}: daemon CPU s per wall s", r["cpu_utilisation"], ""
        )
        label = f"  {mode}: daemon CPU ms per request"
        if cost is not None:
            value = net_cpu_ms(r, cost)
            items[f"{mode}_cpu_ms_per_request_net"] = check(
                f"{label} (without scrapes)", value, "ms"
            )
        else:
            items[f"{mode}_cpu_ms_per_request"] = check(label, r["cpu_ms_per_request"], "ms")
    items["capacity"] = check(
        "daemon capacity: requests per daemon CPU s (steady)",
        1000 / s["cpu_ms_per_request"],
        "/s",
    )
    items["registry_cpu_ms_per_request"] = check(
        "registry CPU ms per request (steady)",
        1000 * s["registry_cpu_seconds"] / s["requests"],
        "ms",
    )
    for run in runs.values():
        if run is None:
            continue
        mode = run["mode"]
        first, last = run["first_round_rss_kib"] / 1024, run["last_round_rss_kib"] / 1024
        rounds = len(run["rounds"])
        below = f"< {RSS_MIB_MAX:g}"
        items[f"{mode}_rss_first"] = check(
            f"{mode}: RSS at the end of round 1", first, "MiB", below, lambda v: v < RSS_MIB_MAX
        )
        items[f"{mode}_rss_last"] = check(
            f"{mode}: RSS at the end of round {rounds}", last, "MiB", below,
            lambda v: v < RSS_MIB_MAX,
        )  # fmt: skip
        items[f"{mode}_rss_flat"] = check(
            f"{mode}: RSS round {rounds} / round 1", last / first, "",
            f"≈ 1 ± {RSS_FLAT_TOLERANCE:g}", lambda v: abs(v - 1) <= RSS_FLAT_TOLERANCE,
        )  # fmt: skip
        items[f"{mode}_rss_peak"] = check(
            f"{mode}: peak RSS (VmHWM)", run["peak_rss_kib"] / 1024, "MiB", below,
            lambda v: v < RSS_MIB_MAX,
        )  # fmt: skip
    return items


def report(figures: dict[str, Any]) -> str:
    p, m = figures["parameters"], figures["machine"]
    runs = [run for run in figures["runs"].values() if run is not None]
    lines = [
        f"registry-canary daemon benchmark: {p['images']} images × 1 layer × {p['layer_size']}, "
        f"blob_check head ({REQUESTS_PER_PULL} requests a pull), concurrency {p['concurrency']}, "
        f"{p['rounds']} rounds; intervals: steady {p['interval']}, saturated "
        f"{p['saturation_interval']}, overloaded {p['overload_interval']}; daemon log level "
        f"{p['log_level']}",
        f"machine: {m['cpus']} CPUs, load average {m['load_average_start'][0]:.2f} at the start "
        f"and {m['load_average_end'][0]:.2f} at the end (this benchmark's own processes "
        "included): a busy machine makes every figure worse",
        "",
        f"{'run':<11}{'round':>9}{'wall s':>8}{'pulls':>7}{'requests':>10}{'req/s':>8}"
        f"{'CPU s':>8}{'CPU ms/req':>12}{'CPU %':>7}{'RSS MiB':>9}{'registry CPU s':>16}"
        f"{'skipped':>9}{'scrapes':>9}",
    ]
    for run in runs:
        for row in [*run["rounds"], run["steady"]]:
            ms = row["cpu_ms_per_request"]
            lines.append(
                f"{run['mode']:<11}{row['label'].removeprefix('round '):>9}"
                f"{row['wall_seconds']:>8.2f}{row['pulls']:>7}{row['requests']:>10}"
                f"{row['requests_per_second']:>8.0f}{row['cpu_seconds']:>8.2f}"
                f"{'-' if ms is None else f'{ms:.3f}':>12}{100 * row['cpu_utilisation']:>7.0f}"
                f"{row['rss_kib_end'] / 1024:>9.1f}{row['registry_cpu_seconds']:>16.2f}"
                f"{row['skipped']:>9}{row['scrapes']:>9}"
            )
    lines.append("")
    for run in runs:
        lines.append(
            f"{run['mode']}: start-up {run['startup_cpu_seconds']:.2f} CPU s to /healthz, "
            f"RSS then {run['startup_rss_kib'] / 1024:.1f} MiB; peak RSS "
            f"{run['peak_rss_kib'] / 1024:.1f} MiB; {run['pulls_total']} pulls, "
            f"{run['requests_total']} requests, {run['probes_skipped_total']} probes skipped, "
            f"{run['failed_fetches']} failed fetches; stopped {run['stop_seconds']:.2f}s after "
            f"SIGTERM with status {run['exit_status']}"
        )
    cost = figures["runs"]["steady"]["scrape_cost"]
    if cost is not None:
        lines.append(
            f"a /metrics scrape ({cost['body_bytes'] / 1024:.0f} KiB) costs the daemon "
            f"{cost['cpu_ms_per_scrape']:.1f} CPU ms (and blocks its event loop as long), "
            "measured against the background rate; the table's CPU includes the scrapes counted"
        )
    lines += [
        "requests: blob fetches + manifest fetches from /metrics; CPU: utime + stime from "
        "/proc/PID/stat; RSS: VmRSS and VmHWM from /proc/PID/status",
        "≥ 1,000 requests/s is judged on the saturated run, end to end: with interval scheduling "
        "the steady rate is the schedule's, not the daemon's. The registry shares the machine's "
        "2 cores: the registry alone line is the most any client gets from it here, and the "
        "daemon's capacity (1 CPU s / its CPU per request) is what a core of its own allows",
        "",
    ]
    width = max(len(item["label"]) for item in figures["checks"].values()) + 2
    lines.append(f"{'figure':<{width}}{'value':>10}  {'unit':<5}target")
    for item in figures["checks"].values():
        value = item["value"]
        shown = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        lines.append(
            f"{item['label']:<{width}}{shown:>10}  {item['unit']:<5}"
            f"{item['target']:<10} {verdict(item['ok'])}"
        )
    if figures["notes"]:
        lines += ["", "NOTES:", *figures["notes"]]
    if figures["failures"]:
        lines += ["", "FAILURES:", *figures["failures"]]
    return "\n".join(lines) + "\n"


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    registry = start_registry(work / "registry")
    runs: dict[str, dict[str, Any] | None] = {"steady": None, "saturated": None, "overloaded": None}
    try:
        seeded = seed(registry, args, work)
        print("the registry alone: the same requests by curl", flush=True)
        curl = registry_alone(registry, seeded.entries, args.concurrency, work / "curl")
        shortest_round = curl["requests"] / curl["requests_per_second"]
        modes = [("steady", args.interval)]
        for mode, interval in (
            ("saturated", args.saturation_interval),
            ("overloaded", args.overload_interval),
        ):
            if interval != "off":
                modes.append((mode, interval))
        for mode, interval in modes:
            config = work / f"{mode}.yaml"
            document = catalog(registry.url, seeded.entries, interval, args.concurrency)
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            seconds = parse_duration(interval)
            runs[mode] = measure(
                mode, config, registry, args, seconds, work, mode == "steady", shortest_round
            )
    finally:
        registry.stop()
    done = [run for run in runs.values() if run is not None]
    failures = [failure for run in done for failure in run["failures"]]
    notes = [note for run in done for note in run["notes"]]
    return {
        "parameters": {
            "images": args.images,
            "layers": 1,
            "layer_size": LAYER_SIZE,
            "blob_check": "head",
            "requests_per_pull": REQUESTS_PER_PULL,
            "concurrency": args.concurrency,
            "interval": args.interval,
            "saturation_interval": args.saturation_interval,
            "overload_interval": args.overload_interval,
            "rounds": args.rounds,
            "poll_seconds": args.poll,
            "log_level": args.log_level,
            "seeders": args.seeders,
            "seed_seconds": round(seeded.seed_seconds, 3),
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
            "platform": platform.platform(),
            "registry": tool_version(["docker-registry", "--version"]),
            "curl": tool_version(["curl", "--version"]),
        },
        "registry_alone": curl,
        "runs": runs,
        "checks": checks(runs, curl),
        "failures": failures,
        "notes": notes,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=IMAGES, help=f"default {IMAGES}")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    parser.add_argument("--interval", default=INTERVAL, help=f"steady run (default {INTERVAL})")
    parser.add_argument(
        "--saturation-interval",
        default=SATURATION_INTERVAL,
        help=f"saturated run (default {SATURATION_INTERVAL}; `off` skips it)",
    )
    parser.add_argument(
        "--overload-interval",
        default=OVERLOAD_INTERVAL,
        help=f"overloaded run (default {OVERLOAD_INTERVAL}; `off` skips it)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help=f"default {CONCURRENCY}"
    )
    parser.add_argument("--seeders", type=int, default=SEEDERS, help=f"default {SEEDERS}")
    parser.add_argument(
        "--poll", type=float, default=POLL_SECONDS, help=f"/metrics poll seconds ({POLL_SECONDS})"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default {OUTPUT}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for option in ("images", "rounds", "concurrency", "seeders"):
        if getattr(args, option) < 1:
            print(f"--{option} must be at least 1", file=sys.stderr)
            return 2
    if not 0.05 <= args.poll <= 10:
        print("--poll must be between 0.05 and 10 seconds", file=sys.stderr)
        return 2
    intervals = [
        ("interval", args.interval),
        ("saturation-interval", args.saturation_interval),
        ("overload-interval", args.overload_interval),
    ]
    for option, value in intervals:
        if value == "off" and option != "interval":
            continue
        try:
            parse_duration(value)
        except ValueError as exc:
            print(f"--{option}: {exc}", file=sys.stderr)
            return 2
    return run_benchmark(
        ("docker-registry", "curl"),
        "canary-bench-daemon-",
        args.output,
        lambda work: bench(args, work),
        report,
        failed=lambda figures: bool(figures["failures"]),
    )


if __name__ == "__main__":
    sys.exit(main())
