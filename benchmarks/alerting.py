"""What does the daemon's own alerting cost? CPU per result, the incident's ramp, and posts.

Run by `make bench`. A catalog of 1,000 images in one environment, as `run` would track it:

- per result, in process (time.process_time, best of 3): the alert sink's `consume` against the
  metric sink's (the reference, which every pull pays anyway), for healthy pulls and for pulls
  of an environment whose every image is already firing (the steady state of an incident);
- the ramp of an environment-wide incident: 1,000 images turning blob_unknown one after another,
  each a change that rebuilds the firing set: total CPU, against 1,000 metric sink results;
- posting: a real Alertmanager (Debian `prometheus-alertmanager`, loopback) is sent the 1,000
  firing alerts by the notifier; the time until it accepted them and the JSON size, against a
  post of 1 alert in the same run.

This is a benchmark, not a test: it prints the figures and writes them to .bench/alerting.json;
it exits 1 only when something fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from common import BenchError, bench_targets, best_cpu, images_main, verdict
from prometheus_client import CollectorRegistry

from canary.alertmanager import Notifier
from canary.config import Target
from canary.metrics import Metrics
from canary.results import (
    BlobKind,
    BlobResult,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
    PublishedStatus,
)
from canary.servers import Alertmanager
from canary.sinks.alerts import AlertSink
from canary.sinks.metrics import MetricsSink
from canary.testbed import free_port

IMAGES = 1000
REPEATS = 3
OUTPUT = Path(".bench/alerting.json")
ALERTMANAGER = "prometheus-alertmanager"
START_SECONDS = 20.0


def pulled(target: Target, outcome: Outcome) -> ImageResult:
    blob = BlobResult(
        digest="sha256:" + "c" * 64,
        kind=BlobKind.LAYER,
        platform=None,
        outcome=outcome,
        hop=Hop.REGISTRY,
        status=404 if outcome is Outcome.BLOB_UNKNOWN else 200,
        bytes=0,
        first_outcome=outcome,
        duration_seconds=0.001,
    )
    status = PublishedStatus.OK if outcome is Outcome.OK else PublishedStatus.MISSING
    return ImageResult(
        environment=target.environment.name,
        repository=target.image.repository,
        tag=target.image.tag,
        outcome=outcome,
        manifests=(ManifestResult("sha256:" + "a" * 64, Outcome.OK, 200),),
        blobs=(blob,),
        published=(PublishedResult(datetime(2023, 5, 1, tzinfo=UTC), "config", status),),
        started_at=datetime.now(UTC),
        duration_seconds=0.01,
    )


def idle_notifier() -> Notifier:
    """A notifier that is never started: it keeps the firing set as the daemon's would."""
    settings = Alertmanager.model_validate({"url": "http://127.0.0.1:9"})
    return Notifier(settings, Metrics(CollectorRegistry()), structlog.get_logger())


def in_process(images: int) -> dict[str, Any]:
    targets = bench_targets(images)
    ok = [pulled(t, Outcome.OK) for t in targets]
    lost = [pulled(t, Outcome.BLOB_UNKNOWN) for t in targets]
    rounds = 5

    metric_sink = MetricsSink(Metrics(CollectorRegistry()))
    metric_sink.track(targets)

    def metrics_round() -> None:
        for _ in range(rounds):
            for result in ok:
                metric_sink.consume(result)

    healthy_sink = AlertSink()
    healthy_sink.configure(idle_notifier(), {})
    healthy_sink.track(targets)

    def healthy_round() -> None:
        for _ in range(rounds):
            for result in ok:
                healthy_sink.consume(result)

    firing_sink = AlertSink()
    firing_sink.configure(idle_notifier(), {})
    firing_sink.track(targets)
    for result in lost:
        firing_sink.consume(result)

    def incident_round() -> None:
        for _ in range(rounds):
            for result in lost:
                firing_sink.consume(result)

    def ramp() -> None:
        sink = AlertSink()
        sink.configure(idle_notifier(), {})
        sink.track(targets)
        for result in lost:
            sink.consume(result)

    def metrics_once() -> None:
        for result in ok:
            metric_sink.consume(result)

    results = rounds * images
    reference = best_cpu(metrics_round, REPEATS) / results
    healthy = best_cpu(healthy_round, REPEATS) / results
    incident = best_cpu(incident_round, REPEATS) / results
    ramp_seconds = best_cpu(ramp, REPEATS)
    ramp_reference = best_cpu(metrics_once, REPEATS)
    return {
        "images": images,
        "metric_sink_us_per_result": reference * 1e6,
        "alert_sink_us_per_result_healthy": healthy * 1e6,
        "alert_sink_us_per_result_incident": incident * 1e6,
        "healthy_ratio": healthy / reference,
        "incident_ratio": incident / reference,
        "ramp_cpu_seconds": ramp_seconds,
        "ramp_reference_cpu_seconds": ramp_reference,
        "ramp_ratio": ramp_seconds / ramp_reference,
    }


def start_alertmanager(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = work / "alertmanager.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={work / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return process, url


async def post(url: str, count: int) -> tuple[float, int]:
    """Seconds from set_firing to the Alertmanager's acceptance of `count` alerts; JSON bytes."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    targets = bench_targets(count)
    sink = AlertSink()
    settings = Alertmanager.model_validate({"url": url})
    notifier = Notifier(settings, metrics, structlog.get_logger())
    notifier.start()
    try:
        sink.track(targets)
        for result in (pulled(t, Outcome.BLOB_UNKNOWN) for t in targets):
            sink.consume(result)
        size = len(json.dumps([a.to_api(datetime.now(UTC), None) for a in sink.alerts()]))
        start = time.perf_counter()
        sink.configure(notifier, {})  # one change: every alert at once
        deadline = start + 30
        while (
            registry.get_sample_value("registry_canary_alert_deliveries_total", {"outcome": "ok"})
            != 1
        ):
            if time.perf_counter() > deadline:
                raise BenchError("the Alertmanager did not accept the alerts within 30 s")
            await asyncio.sleep(0.001)
        return time.perf_counter() - start, size
    finally:
        await notifier.close()


async def ready(url: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise BenchError("the Alertmanager did not start")


def posting(images: int, work: Path) -> dict[str, Any]:
    process, url = start_alertmanager(work)
    try:

        async def measure() -> dict[str, Any]:
            await ready(url)
            await post(url, 1)  # warm the Alertmanager up
            single = min([(await post(url, 1))[0] for _ in range(REPEATS)])
            many = [await post(url, images) for _ in range(REPEATS)]
            seconds = min(s for s, _ in many)
            return {
                "post_1_alert_seconds": single,
                "post_all_alerts_seconds": seconds,
                "post_all_alerts_bytes": many[0][1],
                "post_ratio": seconds / single,
            }

        return asyncio.run(measure())
    finally:
        process.terminate()
        process.wait(timeout=30)


def bench(images: int, work: Path) -> dict[str, Any]:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40)
    )  # errors only: the benchmark's output is its report
    figures = in_process(images)
    figures.update(posting(images, work))
    return figures


def report(f: dict[str, Any]) -> str:
    n = f["images"]
    lines = [
        f"alerting, {n} images in one environment",
        f"  metric sink (reference)          {f['metric_sink_us_per_result']:8.1f} µs per result",
        f"  alert sink, healthy pulls        {f['alert_sink_us_per_result_healthy']:8.1f} µs"
        f"  ({f['healthy_ratio']:.2f}× the metric sink; target ≤ 0.25×: "
        f"{verdict(f['healthy_ratio'] <= 0.25)})",
        f"  alert sink, all {n} firing      {f['alert_sink_us_per_result_incident']:8.1f} µs"
        f"  ({f['incident_ratio']:.2f}× the metric sink; target ≤ 0.25×: "
        f"{verdict(f['incident_ratio'] <= 0.25)})",
        f"  incident ramp, {n} turning red   {f['ramp_cpu_seconds']:8.3f} s CPU"
        f"  ({f['ramp_ratio']:.2f}× {n} metric sink results; target ≤ 1×: "
        f"{verdict(f['ramp_ratio'] <= 1)})",
        f"  post of {n} alerts to Alertmanager {f['post_all_alerts_seconds'] * 1000:6.1f} ms, "
        f"{f['post_all_alerts_bytes'] / 1024:.0f} KiB"
        f"  ({f['post_ratio']:.1f}× a post of 1 alert, "
        f"{f['post_1_alert_seconds'] * 1000:.1f} ms)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    return images_main(
        __doc__, IMAGES, OUTPUT, (ALERTMANAGER,), "canary-bench-alerting-", bench, report
    )


if __name__ == "__main__":
    sys.exit(main())
