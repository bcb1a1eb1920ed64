"""Does the daemon hold up under faults for a long time? A soak: memory, descriptors, stuck probes.

Run by `make soak` (`--duration`, default 10m; `--phase`, default 20s). It starts a real
registry on loopback, seeds a small catalog (20 images of two 16 KiB layers by default), puts
the fault proxy (`canary.faults.FaultProxy`, on its own thread in this process) in front of it
and runs `python -m canary run` as a child with two environments:

- `faulty`, through the proxy: most of the images;
- `direct`, straight to the registry: a few images, which should never notice the faults.

Every image is pulled every 1s (timeout 3s, recheck delay 200ms, 4 pulls at a time per
environment, layers read in full). Every `--phase` the benchmark changes the proxy's fault,
cycling through every kind of fault (latency 0.5s and 4s, a stalled body, a reset body, a
truncated body, a lying Content-Length, 500/502/503, 429 with Retry-After 5, a redirect loop,
a redirect to a closed port, an oversized body, malformed JSON, a wrong Content-Type) with a
phase without faults between two faults. A fault applies to the manifests of two of the faulty
environment's repositories and to the blobs of two others; the rest pass through untouched.

Everything is measured from outside, as in benchmarks/daemon.py:

- every few seconds: RSS (VmRSS, /proc/PID/status), open file descriptors (/proc/PID/fd) and
  /metrics: pulls run (`image_pulls_total`), fetch outcomes by kind (`manifest_fetches_total`,
  `blob_fetches_total`), probes skipped by reason;
- event-loop responsiveness: the daemon does not export its event-loop lag, so a thread GETs
  /healthz every 200 ms and the latency of those answers (p50/p95/p99/max) stands for it. It
  includes the HTTP round trip on loopback and this process's own scheduling (the proxy shares
  it), so it is an upper bound on the lag, not the lag itself;
- at the end of every phase, and at the end of the run: no probe stuck. Every entry must have
  finished a pull within 3 intervals + the timeout, unless its environment was told to back off
  (429 Retry-After) within that window: the daemon honours Retry-After for the whole
  environment, by design, and the phase after the 429 one checks that it came back;
- at the end: the daemon is still alive, and after SIGTERM exits 0 within its grace period
  (10s; 2s of slack for the process to tear down).

RSS and descriptors should be flat: the mean of the samples of the first minute after a 30s
warm-up is compared with the mean of the last minute; the target is within 10%. With a short
`--duration` the two windows overlap (the report says so).

This is a benchmark, not a test: it exits 1 only when something fails (the daemon dies, exits
badly, leaves a probe stuck, logs an error or writes to stderr, stops answering /metrics),
never for a missed target. The figures are printed and written as JSON to .bench/soak.json.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import yaml
from common import REPO_ROOT, BenchError, run_benchmark, seed_entries, tool_version, verdict
from daemon import Daemon, read_log, start_daemon, stop_daemon, tail

from canary.faults import Fault, FaultProxy
from canary.schema import parse_duration
from canary.testbed import LocalRegistry, free_port, start_registry

OUTPUT = REPO_ROOT / ".bench" / "soak.json"
IMAGES = 20
DURATION = "10m"
PHASE = "20s"
LAYERS = 2
LAYER_SIZE = "16KiB"
INTERVAL = "1s"
TIMEOUT = "3s"
RECHECK_DELAY = "200ms"
CONCURRENCY = 4
GRACE_PERIOD = "10s"
STOP_SLACK_SECONDS = 2.0  # after SIGTERM: the grace period, then this long to tear down
FAULTED_REPOSITORIES = 2  # faulty-environment repositories whose manifests get the fault; as
# many more get it on their blobs
SAMPLE_SECONDS = 5.0  # RSS, descriptors and /metrics
HEALTH_POLL_SECONDS = 0.2
HEALTH_TIMEOUT_SECONDS = 5.0
WARMUP_SECONDS = 30.0
WINDOW_SECONDS = 60.0
FLAT_TOLERANCE = 0.10
SCRAPE_TIMEOUT_SECONDS = 10.0
PREFIX = "registry_canary_"
NO_FAULT = "no fault"
MIB = 1024 * 1024
UNKNOWN_ERROR = b'{"errors":[{"code":"UNKNOWN","message":"injected by the soak"}]}'


def fault_plan(closed_port: int) -> list[tuple[str, Fault, dict[str, Any]]]:
    """Every kind of fault, with parameters that matter against a 3s timeout."""
    return [
        ("latency 0.5s", Fault.LATENCY, {"seconds": 0.5}),
        ("latency 4s", Fault.LATENCY, {"seconds": 4.0}),
        ("stalled body", Fault.STALL_BODY, {"seconds": 10.0}),
        ("reset body", Fault.RESET_BODY, {}),
        ("truncated body", Fault.TRUNCATE, {}),
        ("lying Content-Length", Fault.LYING_LENGTH, {}),
        ("HTTP 500", Fault.STATUS, {"status": 500, "body": UNKNOWN_ERROR}),
        ("HTTP 502", Fault.STATUS, {"status": 502}),
        ("HTTP 503", Fault.STATUS, {"status": 503}),
        ("429 Retry-After 5", Fault.TOO_MANY_REQUESTS, {"retry_after": 5}),
        ("redirect loop", Fault.REDIRECT_LOOP, {}),
        (
            "redirect to a closed port",
            Fault.REDIRECT_TO,
            {"location": f"http://127.0.0.1:{closed_port}/gone"},
        ),
        ("oversized body (5 MiB, chunked)", Fault.OVERSIZED, {"size": 5 * MIB, "chunked": True}),
        ("malformed JSON", Fault.MALFORMED_JSON, {}),
        ("wrong Content-Type", Fault.CONTENT_TYPE, {"content_type": "text/html"}),
    ]


# Reading /metrics.

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
Key = tuple[str, str, str]  # environment, repository, tag


@dataclass(frozen=True, slots=True)
class Scrape:
    wall: float  # time.time() when the answer was in
    pulls: Counter[str]  # by environment
    pull_failures: Counter[str]  # by environment
    fetches: Counter[tuple[str, str, str]]  # (environment, manifest/config/layer, outcome)
    skipped: Counter[tuple[str, str]]  # (environment, reason)
    last_probe: dict[Key, float]
    backoff_until: dict[str, float]  # environment: until when a 429 asked for no requests


def parse_metrics(text: str, wall: float) -> Scrape:
    pulls, failures = Counter[str](), Counter[str]()
    fetches = Counter[tuple[str, str, str]]()
    skipped = Counter[tuple[str, str]]()
    last_probe: dict[Key, float] = {}
    backoff: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        series, _, text_value = line.rpartition(" ")
        name, _, rest = series.partition("{")
        name = name.removeprefix(PREFIX)
        labels = dict(_LABEL.findall(rest))
        value = float(text_value)
        env = labels.get("environment", "")
        key = (env, labels.get("repository", ""), labels.get("tag", ""))
        if name == "image_pulls_total":
            pulls[env] += int(value)
        elif name == "image_pull_failures_total":
            failures[env] += int(value)
        elif name == "manifest_fetches_total":
            fetches[env, "manifest", labels["outcome"]] += int(value)
        elif name == "blob_fetches_total":
            fetches[env, labels["kind"], labels["outcome"]] += int(value)
        elif name == "probes_skipped_total":
            skipped[env, labels.get("reason", "")] += int(value)
        elif name == "image_last_probe_timestamp_seconds":
            last_probe[key] = value
        elif name == "environment_backoff_until_timestamp_seconds":
            backoff[env] = value
    return Scrape(wall, pulls, failures, fetches, skipped, last_probe, backoff)


def scrape(daemon: Daemon) -> Scrape:
    connection = http.client.HTTPConnection(
        daemon.url.removeprefix("http://"), timeout=SCRAPE_TIMEOUT_SECONDS
    )
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        text = answer.read().decode()
        if answer.status != 200:
            raise OSError(f"GET /metrics answered {answer.status}")
    finally:
        connection.close()
    return parse_metrics(text, time.time())


def stuck(
    now: Scrape, expected: Sequence[Key], limit: float
) -> tuple[list[dict[str, Any]], float, list[str]]:
    """Entries that finished no pull within `limit` seconds, the oldest age among the checked
    entries, and the environments excused because a 429 told them to back off meanwhile."""
    excused = sorted(env for env, until in now.backoff_until.items() if until > now.wall - limit)
    late, oldest = [], 0.0
    for key in expected:
        if key[0] in excused:
            continue
        stamp = now.last_probe.get(key)
        age = math.inf if not stamp else now.wall - stamp
        oldest = max(oldest, age)
        if age > limit:
            late.append({"entry": f"{key[0]}/{key[1]}:{key[2]}", "age_seconds": round(age, 1)})
    return late, round(oldest, 2), excused


# Event-loop responsiveness: GET /healthz latency, from a thread.


@dataclass
class HealthPoller:
    url: str
    phase: int = 0
    samples: list[tuple[float, int, float | None]] = field(default_factory=list)  # t, phase, s
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, origin: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(origin,), daemon=True)
        self._thread.start()

    def _run(self, origin: float) -> None:
        host = self.url.removeprefix("http://")
        while not self._stop.is_set():
            begun = time.monotonic()
            latency: float | None = None
            connection = http.client.HTTPConnection(host, timeout=HEALTH_TIMEOUT_SECONDS)
            try:
                connection.request("GET", "/healthz")
                answer = connection.getresponse()
                answer.read()
                if answer.status == 200:
                    latency = time.monotonic() - begun
            except OSError:
                latency = None
            finally:
                connection.close()
            self.samples.append((begun - origin, self.phase, latency))
            self._stop.wait(max(0.0, HEALTH_POLL_SECONDS - (time.monotonic() - begun)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEALTH_TIMEOUT_SECONDS + 1)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_figures(samples: Sequence[tuple[float, int, float | None]]) -> dict[str, Any]:
    ms = [1000 * s for _, _, s in samples if s is not None]
    failed = sum(1 for _, _, s in samples if s is None)
    figures: dict[str, Any] = {"requests": len(samples), "failed": failed}
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        figures[f"{name}_ms"] = round(percentile(ms, fraction), 2) if ms else None
    figures["max_ms"] = round(max(ms), 2) if ms else None
    return figures


# The daemon's process.


def process_figures(pid: int) -> tuple[int, int, int]:
    """VmRSS and VmHWM in KiB, and the number of open file descriptors."""
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0])
    return memory.get("VmRSS", 0), memory.get("VmHWM", 0), len(os.listdir(f"/proc/{pid}/fd"))


# The run.


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    fault: Fault | None
    params: dict[str, Any]


def phases(plan: list[tuple[str, Fault, dict[str, Any]]]) -> Iterator[Phase]:
    calm = Phase(NO_FAULT, None, {})
    for name, fault, params in cycle(plan):
        yield calm
        yield Phase(name, fault, params)


def diff(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})


def catalog(
    entries: list[dict[str, str]], proxy_url: str, registry_url: str, direct: int
) -> dict[str, Any]:
    images = []
    for index, entry in enumerate(entries):
        images.append({**entry, "environments": ["direct" if index < direct else "faulty"]})
    return {
        "daemon": {"grace_period": GRACE_PERIOD},
        "defaults": {
            "interval": INTERVAL,
            "timeout": TIMEOUT,
            "recheck_delay": RECHECK_DELAY,
            "blob_check": "get",
        },
        "environments": [
            {"name": "faulty", "url": proxy_url, "concurrency": CONCURRENCY},
            {"name": "direct", "url": registry_url, "concurrency": CONCURRENCY},
        ],
        "images": images,
    }


def pattern(repositories: Sequence[str], what: str) -> str:
    names = "|".join(re.escape(repo) for repo in repositories)
    return f"^/v2/(?:{names})/{what}/"


@dataclass
class Soak:
    """What the run collects as it goes."""

    daemon: Daemon
    registry: LocalRegistry
    proxy: FaultProxy
    expected: list[Key]
    limit: float
    origin: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    scrape_failures: int = 0
    last: Scrape | None = None
    health: list[tuple[float, int, float | None]] = field(default_factory=list)

    def offset(self) -> float:
        return time.monotonic() - self.origin

    def alive(self) -> bool:
        if self.daemon.process.poll() is not None:
            self.failures.append(
                f"the daemon exited with {self.daemon.process.returncode} at "
                f"{self.offset():.0f}s:\n{tail(self.daemon.errors, 2000)}"
            )
            return False
        if self.registry.process.poll() is not None:
            raise BenchError(f"the registry exited; see {self.registry.log}")
        return True

    def scrape(self) -> Scrape | None:
        try:
            self.last = scrape(self.daemon)
        except (OSError, http.client.HTTPException) as exc:
            self.scrape_failures += 1
            self.failures.append(f"GET /metrics failed at {self.offset():.0f}s: {exc}")
            return None
        return self.last

    def sample(self) -> None:
        rss, hwm, fds = process_figures(self.daemon.process.pid)
        now = self.scrape()
        self.samples.append(
            {
                "t": round(self.offset(), 2),
                "rss_kib": rss,
                "hwm_kib": hwm,
                "fds": fds,
                "pulls": None if now is None else sum(now.pulls.values()),
            }
        )

    def finish_phase(
        self, phase: Phase, began: float, before: Scrape | None, requests_before: int
    ) -> Scrape | None:
        now = self.scrape()
        record: dict[str, Any] = {
            "phase": phase.name,
            "fault": None if phase.fault is None else str(phase.fault),
            "params": {
                k: v.decode() if isinstance(v, bytes) else v for k, v in phase.params.items()
            },
            "start_seconds": round(began, 1),
            "seconds": round(self.offset() - began, 1),
            "proxy_requests": self.proxy.requests - requests_before,
        }
        if now is not None and before is not None:
            record["pulls"] = dict(diff(now.pulls, before.pulls))
            record["pull_failures"] = dict(diff(now.pull_failures, before.pull_failures))
            fetches = diff(now.fetches, before.fetches)
            record["fetches"] = {"/".join(k): v for k, v in sorted(fetches.items())}
            skipped = diff(now.skipped, before.skipped)
            record["skipped"] = {"/".join(k): v for k, v in sorted(skipped.items())}
        if now is not None:
            late, oldest, excused = stuck(now, self.expected, self.limit)
            record["oldest_probe_age_seconds"] = oldest
            record["stuck"] = late
            record["excused_environments"] = excused
            if late:
                shown = ", ".join(f"{s['entry']} ({s['age_seconds']}s)" for s in late[:5])
                self.failures.append(
                    f"phase {len(self.phases) + 1} ({phase.name}): {len(late)} entries finished "
                    f"no pull in the last {self.limit:g}s: {shown}"
                )
        self.phases.append(record)
        return now


def run_soak(
    daemon: Daemon,
    registry: LocalRegistry,
    proxy: FaultProxy,
    expected: list[Key],
    plan: list[tuple[str, Fault, dict[str, Any]]],
    manifests: str,
    blobs: str,
    args: argparse.Namespace,
) -> Soak:
    limit = 3 * parse_duration(INTERVAL) + parse_duration(TIMEOUT)
    soak = Soak(daemon, registry, proxy, expected, limit, time.monotonic())
    poller = HealthPoller(daemon.url)
    poller.start(soak.origin)
    end = soak.origin + args.duration_seconds
    schedule = phases(plan)
    try:
        phase = next(schedule)
        began, before, requests_before = 0.0, soak.scrape(), proxy.requests
        phase_end = soak.origin + args.phase_seconds
        next_sample = soak.origin
        print(f"phase 1: {phase.name}", flush=True)
        while soak.alive():
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_sample:
                soak.sample()
                next_sample += SAMPLE_SECONDS
            if now >= phase_end:
                before = soak.finish_phase(phase, began, before, requests_before)
                done = soak.phases[-1]
                print(
                    f"  {done['seconds']:.0f}s: {sum(done.get('pulls', {}).values())} pulls, "
                    f"oldest probe {done.get('oldest_probe_age_seconds')}s, "
                    f"RSS {soak.samples[-1]['rss_kib'] / 1024:.1f} MiB, "
                    f"{soak.samples[-1]['fds']} fds",
                    flush=True,
                )
                phase = next(schedule)
                proxy.clear()
                if phase.fault is not None:
                    proxy.inject(manifests, phase.fault, **phase.params)
                    proxy.inject(blobs, phase.fault, **phase.params)
                began, requests_before = soak.offset(), proxy.requests
                poller.phase = len(soak.phases)
                phase_end += args.phase_seconds
                print(f"phase {len(soak.phases) + 1}: {phase.name}", flush=True)
            time.sleep(max(0.0, min(next_sample, phase_end, end) - time.monotonic()))
        if daemon.process.poll() is None:
            soak.sample()
            soak.finish_phase(phase, began, before, requests_before)
    finally:
        poller.stop()
        soak.health = list(poller.samples)
        proxy.clear()
    return soak


def window_mean(samples: list[dict[str, Any]], key: str, start: float, stop: float) -> float:
    values = [s[key] for s in samples if start <= s["t"] < stop]
    return sum(values) / len(values) if values else math.nan


def flatness(samples: list[dict[str, Any]], end: float) -> dict[str, Any]:
    first = (WARMUP_SECONDS, WARMUP_SECONDS + WINDOW_SECONDS)
    last = (max(end - WINDOW_SECONDS, WARMUP_SECONDS), end + 1)
    figures: dict[str, Any] = {
        "first_window_seconds": first,
        "last_window_seconds": (round(last[0], 1), round(end, 1)),
        "windows_overlap": last[0] < first[1],
    }
    for key in ("rss_kib", "fds"):
        a, b = window_mean(samples, key, *first), window_mean(samples, key, *last)
        ratio = b / a if a and not math.isnan(a) and not math.isnan(b) else math.nan
        figures[key] = {
            "first_minute_mean": round(a, 1),
            "last_minute_mean": round(b, 1),
            "ratio": round(ratio, 4),
            "ok": None if math.isnan(ratio) else abs(ratio - 1) <= FLAT_TOLERANCE,
        }
    return figures


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    registry = start_registry(work / "registry")
    try:
        repositories = [f"soak/img-{i:03d}" for i in range(args.images)]
        print(f"registry at {registry.url}; seeding {args.images} images", flush=True)
        seeded = seed_entries(registry.url, work / "seed", repositories, LAYERS, LAYER_SIZE)
        direct = max(1, args.images // 5)
        faulty = repositories[direct:]
        manifests = pattern(faulty[:FAULTED_REPOSITORIES], "manifests")
        blobs = pattern(faulty[FAULTED_REPOSITORIES : 2 * FAULTED_REPOSITORIES], "blobs")
        plan = fault_plan(free_port())
        with FaultProxy(registry.url) as proxy:
            config = work / "soak.yaml"
            document = catalog(seeded.entries, proxy.url, registry.url, direct)
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            expected = [
                (image["environments"][0], image["repository"], image["tag"])
                for image in document["images"]
            ]
            print(
                f"proxy at {proxy.url}; the daemon pulls {len(faulty)} images through it and "
                f"{direct} directly, for {args.duration_seconds:g}s in phases of "
                f"{args.phase_seconds:g}s",
                flush=True,
            )
            daemon = start_daemon(config, work / "daemon", "info")
            try:
                started = process_figures(daemon.process.pid)
                soak = run_soak(daemon, registry, proxy, expected, plan, manifests, blobs, args)
                alive = daemon.process.poll() is None
            finally:
                returncode, stop_seconds = stop_daemon(daemon)
            proxy_requests = proxy.requests
            proxy_hits = dict(proxy.hits)
    finally:
        registry.stop()
    return figures(
        args, soak, alive, started, returncode, stop_seconds, load_at_start, proxy_requests,
        proxy_hits, manifests, blobs, len(faulty), direct,
    )  # fmt: skip


def figures(
    args: argparse.Namespace,
    soak: Soak,
    alive: bool,
    started: tuple[int, int, int],
    returncode: int,
    stop_seconds: float,
    load_at_start: tuple[float, float, float],
    proxy_requests: int,
    proxy_hits: dict[str, int],
    manifests: str,
    blobs: str,
    faulty: int,
    direct: int,
) -> dict[str, Any]:
    failures = list(soak.failures)
    grace = parse_duration(GRACE_PERIOD)
    if alive and returncode != 0:
        failures.append(f"the daemon exited with {returncode} after SIGTERM")
    if alive and stop_seconds > grace + STOP_SLACK_SECONDS:
        failures.append(
            f"the daemon took {stop_seconds:.1f}s to exit after SIGTERM; its grace period is "
            f"{grace:g}s"
        )
    events = read_log(soak.daemon.log)
    normal_levels = ("info", "warning", "debug")
    bad = {e: n for e, n in events.items() if not e.startswith(normal_levels)}
    if bad:
        failures.append(f"the daemon logged {dict(bad)}")
    if tail(soak.daemon.errors):
        failures.append(f"the daemon wrote to stderr:\n{tail(soak.daemon.errors, 2000)}")
    final = soak.last
    end = soak.samples[-1]["t"] if soak.samples else 0.0
    fetches: dict[str, int] = {}
    if final is not None:
        fetches = {"/".join(k): v for k, v in sorted(final.fetches.items()) if v}
    health = latency_figures(soak.health)
    for index, record in enumerate(soak.phases):
        record["healthz"] = latency_figures([s for s in soak.health if s[1] == index])
    return {
        "parameters": {
            "duration_seconds": args.duration_seconds,
            "phase_seconds": args.phase_seconds,
            "images": args.images,
            "faulty_images": faulty,
            "direct_images": direct,
            "layers": LAYERS,
            "layer_size": LAYER_SIZE,
            "interval": INTERVAL,
            "timeout": TIMEOUT,
            "recheck_delay": RECHECK_DELAY,
            "concurrency": CONCURRENCY,
            "grace_period": GRACE_PERIOD,
            "fault_on_manifests": manifests,
            "fault_on_blobs": blobs,
            "stuck_after_seconds": soak.limit,
            "sample_seconds": SAMPLE_SECONDS,
            "healthz_poll_seconds": HEALTH_POLL_SECONDS,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
            "platform": platform.platform(),
            "registry": tool_version(["docker-registry", "--version"]),
        },
        "run_seconds": end,
        "probes_run": sum(final.pulls.values()) if final else None,
        "probes_by_environment": dict(final.pulls) if final else {},
        "failed_pulls_by_environment": dict(final.pull_failures) if final else {},
        "fetch_outcomes": fetches,
        "probes_skipped": {"/".join(k): v for k, v in final.skipped.items()} if final else {},
        "proxy_requests": proxy_requests,
        "proxy_hits": proxy_hits,
        "start": {"rss_kib": started[0], "fds": started[2]},
        "end": {
            "rss_kib": soak.samples[-1]["rss_kib"] if soak.samples else None,
            "fds": soak.samples[-1]["fds"] if soak.samples else None,
            "peak_rss_kib": max((s["hwm_kib"] for s in soak.samples), default=None),
        },
        "flatness": flatness(soak.samples, end),
        "healthz_latency": health,
        "phases": soak.phases,
        "samples": soak.samples,
        "daemon_alive_at_end": alive,
        "exit_status": returncode,
        "stop_seconds": round(stop_seconds, 3),
        "log_lines": dict(sorted(events.items())),
        "scrape_failures": soak.scrape_failures,
        "failures": failures,
    }


# The report.


def _kib(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value / 1024:.1f} MiB"


def _num(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(figures: dict[str, Any]) -> str:
    p, m = figures["parameters"], figures["machine"]
    lines = [
        f"registry-canary soak: {figures['run_seconds']:.0f}s in phases of "
        f"{p['phase_seconds']:g}s; {p['faulty_images']} images through the fault proxy "
        f"(`faulty`), {p['direct_images']} straight to the registry (`direct`), "
        f"{p['layers']} × {p['layer_size']} layers; interval {p['interval']}, timeout "
        f"{p['timeout']}, recheck delay {p['recheck_delay']}, concurrency {p['concurrency']}",
        f"faults on manifests {p['fault_on_manifests']} and blobs {p['fault_on_blobs']}",
        f"machine: {m['cpus']} CPUs, load average {m['load_average_start'][0]:.2f} at the start "
        f"and {m['load_average_end'][0]:.2f} at the end",
        "",
        f"{'#':>3} {'phase':<32}{'pulls':>7}{'failed':>8}{'skipped':>9}{'oldest s':>10}"
        f"{'healthz p99 ms':>16}  non-ok fetch outcomes",
    ]
    for number, phase in enumerate(figures["phases"], 1):
        fetches = {k: v for k, v in phase.get("fetches", {}).items() if not k.endswith("/ok")}
        shown = ", ".join(f"{k} {v}" for k, v in fetches.items()) or "-"
        excused = phase.get("excused_environments") or []
        oldest = phase.get("oldest_probe_age_seconds")
        oldest_text = "-" if oldest is None else f"{oldest:.1f}"
        if excused:
            oldest_text += "*"
        health = phase.get("healthz") or {}
        lines.append(
            f"{number:>3} {phase['phase']:<32}{sum(phase.get('pulls', {}).values()):>7}"
            f"{sum(phase.get('pull_failures', {}).values()):>8}"
            f"{sum(phase.get('skipped', {}).values()):>9}{oldest_text:>10}"
            f"{_ms(health.get('p99_ms')):>16}  {shown}"
        )
    lines += [
        "oldest: the oldest last pull of any entry when the phase ended (stuck above "
        f"{p['stuck_after_seconds']:g}s = 3 intervals + the timeout); * an environment told to "
        "back off by a 429 in that window is not checked",
        "",
        f"probes run: {figures['probes_run']} ("
        + ", ".join(f"{e} {n}" for e, n in sorted(figures["probes_by_environment"].items()))
        + "); failed pulls: "
        + (
            ", ".join(f"{e} {n}" for e, n in sorted(figures["failed_pulls_by_environment"].items()))
            or "none"
        )
        + "; probes skipped: "
        + (", ".join(f"{k} {v}" for k, v in sorted(figures["probes_skipped"].items())) or "none"),
        f"proxy: {figures['proxy_requests']} requests, faults applied: "
        + (", ".join(f"{k} {v}" for k, v in sorted(figures["proxy_hits"].items())) or "none"),
        "fetch outcomes over the whole run (environment/kind/outcome):",
    ]
    outcomes = figures["fetch_outcomes"]
    for key, value in outcomes.items():
        lines.append(f"  {key:<40}{value:>8}")
    flat, start, end = figures["flatness"], figures["start"], figures["end"]
    health = figures["healthz_latency"]
    lines += [
        "",
        f"RSS: {_kib(start['rss_kib'])} at start (healthy), {_kib(end['rss_kib'])} at the end, "
        f"peak (VmHWM) {_kib(end['peak_rss_kib'])}",
        f"open file descriptors: {start['fds']} at start, {end['fds']} at the end",
        f"event-loop responsiveness (GET /healthz latency, polled every "
        f"{p['healthz_poll_seconds']:g}s from this process; an upper bound on the loop's lag): "
        f"p50 {_ms(health['p50_ms'])} ms, p95 {_ms(health['p95_ms'])} ms, p99 "
        f"{_ms(health['p99_ms'])} ms, max {_ms(health['max_ms'])} ms over {health['requests']} "
        f"requests, {health['failed']} failed",
        f"the daemon stopped {figures['stop_seconds']:.2f}s after SIGTERM with status "
        f"{figures['exit_status']} (grace period {p['grace_period']})",
        "",
    ]
    a, b = flat["first_window_seconds"], flat["last_window_seconds"]
    label_first = f"{a[0]:g}-{a[1]:g}s"
    label_last = f"{b[0]:g}-{b[1]:g}s"
    width = 52
    lines.append(f"{'figure':<{width}}{'first':>12}{'last':>12}{'last/first':>12}  target")
    for key, name, render in (("rss_kib", "RSS", _kib), ("fds", "open file descriptors", _num)):
        item = flat[key]
        ratio = item["ratio"]
        lines.append(
            f"{f'{name}, mean of {label_first} vs {label_last}':<{width}}"
            f"{render(item['first_minute_mean']):>12}{render(item['last_minute_mean']):>12}"
            f"{'-' if math.isnan(ratio) else f'{ratio:.3f}':>12}  "
            f"≈ 1 ± {FLAT_TOLERANCE:g} {verdict(item['ok'])}"
        )
    stuck_phases = sum(1 for phase in figures["phases"] if phase.get("stuck"))
    lines.append(
        f"{'phases that ended with a stuck probe':<{width}}{'':>12}{'':>12}{stuck_phases:>12}  "
        f"0 {verdict(stuck_phases == 0)}"
    )
    if flat["windows_overlap"]:
        lines.append(
            "NOTE: the run is too short for two separate minutes after the warm-up: the windows "
            "overlap, so the flatness figures say little (run it for 10m)"
        )
    if figures["failures"]:
        lines += ["", "FAILURES:", *figures["failures"]]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", default=DURATION, help=f"default {DURATION}")
    parser.add_argument(
        "--phase", default=PHASE, help=f"how long each fault (or no fault) lasts (default {PHASE})"
    )
    parser.add_argument("--images", type=int, default=IMAGES, help=f"default {IMAGES}")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default {OUTPUT}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for option in ("duration", "phase"):
        try:
            setattr(args, f"{option}_seconds", parse_duration(getattr(args, option)))
        except ValueError as exc:
            print(f"--{option}: {exc}", file=sys.stderr)
            return 2
    minimum = 2 * FAULTED_REPOSITORIES + 2
    if args.images < minimum:
        print(f"--images must be at least {minimum}", file=sys.stderr)
        return 2
    if args.phase_seconds < 2 * SAMPLE_SECONDS:
        print(f"--phase must be at least {2 * SAMPLE_SECONDS:g}s", file=sys.stderr)
        return 2
    return run_benchmark(
        ("docker-registry",),
        "canary-bench-soak-",
        args.output,
        lambda work: bench(args, work),
        report,
        failed=lambda figures: bool(figures["failures"]),
    )


if __name__ == "__main__":
    sys.exit(main())
