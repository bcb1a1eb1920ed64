"""What do diagnosis, the byte budget, the JUnit report and the control probe cost?

Run by `make bench`. Each figure is a ratio against a reference measured in the same run; CPU is
process time (time.process_time), the best of 5.

- diagnosis sink, 1,000 images in one environment: `consume` per result for healthy pulls and
  for pulls while every image is blob_unknown and a fresh control round pulled back fine (the
  incident, legacy_data_unreadable on), against the metric sink's `consume` (the reference every
  pull pays); and the ramp, 1,000 healthy images turning blob_unknown one after another, against
  1,000 metric sink results;
- byte budget: a BlobBudget over 100,000 layers (10,000 images of 10 layers, sizes from a
  seeded RNG, bytes_per_hour 1.25 times what verifies the catalog within 24h), one simulated
  round being take (and done when granted) for each layer of each image then settle per image:
  CPU per layer decision, against the metric sink's `consume` of one pull's result with 10
  layers divided by 10 (what the metric sink pays per layer of the same pull); and the memory
  the budget holds per layer (tracemalloc; the digests are the caller's, shared), against the
  bytes of the digest strings themselves; and, for information, one `oldest_age` (a scan of
  every layer, which housekeeping and /status make);
- JUnit report of 1,000 results in 2 environments, a tenth failing with 3 failed blobs each (the
  shape of benchmarks/statuspage.py), against render_json of the same results: CPU and size;
- control probe, against a real registry on loopback (Debian `docker-registry`): one
  ControlProbe.round (push a config and a 1 KiB layer and a manifest, pull it back verified,
  delete it), best of 5 after a warm-up, against probe_image of a seeded catalog image of the
  same size, with the same long-lived RegistryClient: CPU and wall time, and writes per round.

This is a benchmark, not a test: it prints the figures and writes them to .bench/diagnosis.json;
it exits 1 only when something fails.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from common import BenchError, bench_targets, best_cpu, images_main, verdict
from prometheus_client import CollectorRegistry

from canary.budget import BlobBudget, required_bytes_per_hour
from canary.config import Budget, Config, Target, parse_config
from canary.control import ControlProbe
from canary.junit import render_junit
from canary.metrics import Metrics
from canary.probe import probe_image
from canary.registry.client import RegistryClient
from canary.report import render_json
from canary.results import (
    BlobKind,
    BlobResult,
    ControlResult,
    Evidence,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
    PublishedStatus,
)
from canary.seed import seed
from canary.sinks.diagnosis import DiagnosisSink
from canary.sinks.metrics import MetricsSink
from canary.testbed import REGISTRY_BINARY, start_registry

IMAGES = 1000
REPEATS = 5
ROUNDS = 5  # of the diagnosis sink's results per timing, as in benchmarks/alerting.py
OUTPUT = Path(".bench/diagnosis.json")

BUDGET_IMAGES = 10_000
BUDGET_LAYERS_PER_IMAGE = 10
CYCLE = 60.0  # every image is pulled this often; the daemon's hold is two cycles
VERIFY_WITHIN = 86400.0

CONTROL_REPEATS = 5
CONTROL_REPOSITORY = "canary/control"
CATALOG_REPOSITORY = "team/seeded"
PUBLISHED = "2023-05-01T12:00:00Z"
LAYER_BYTES = 1024  # the control's own layer size

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


# Results.


def blob(index: int, outcome: Outcome, kind: BlobKind = BlobKind.LAYER) -> BlobResult:
    failing = outcome is not Outcome.OK
    return BlobResult(
        digest="sha256:" + f"{index:064x}",
        kind=kind,
        platform=None,
        outcome=outcome,
        hop=Hop.REGISTRY,
        status=404 if failing else 200,
        bytes=0 if failing else 1024,
        first_outcome=outcome,
        duration_seconds=0.001,
        request_id=f"req-{index}",
        evidence=Evidence(
            detail="HTTP 404 BLOB_UNKNOWN: blob unknown to registry",
            url=f"http://127.0.0.1:5000/v2/team/image/blobs/sha256:{index:064x}",
            status=404,
            code="BLOB_UNKNOWN",
            request_id=f"req-{index}",
        )
        if failing
        else None,
    )


def result(
    environment: str, repository: str, outcome: Outcome, blobs: tuple[BlobResult, ...]
) -> ImageResult:
    """A pull's result; the config blob (and so the date) was read, as in the incident."""
    published = PublishedResult(datetime(2023, 5, 1, tzinfo=UTC), "config", PublishedStatus.OK)
    return ImageResult(
        environment=environment,
        repository=repository,
        tag="v1",
        outcome=outcome,
        manifests=(ManifestResult("sha256:" + "a" * 64, Outcome.OK, 200),),
        blobs=blobs,
        published=(published,),
        started_at=STARTED,
        duration_seconds=0.01,
    )


def pulled(target: Target, outcome: Outcome) -> ImageResult:
    """A one-layer pull that ended with `outcome`, as benchmarks/alerting.py makes them."""
    return result(target.environment.name, target.image.repository, outcome, (blob(0, outcome),))


def control_ok(environment: str) -> ControlResult:
    return ControlResult(
        environment=environment,
        repository=CONTROL_REPOSITORY,
        tag="registry-canary-control-bench",
        digest=None,
        outcome=Outcome.OK,
        failed_step=None,
        durations=(),
        writes=(),
        deleted=True,
        started_at=STARTED,
    )


def feed(consume: Callable[[ImageResult], None], results: list[ImageResult], rounds: int) -> None:
    for _ in range(rounds):
        for item in results:
            consume(item)


def quiet_log() -> Any:
    return structlog.get_logger()


# 1. The diagnosis sink.


def diagnosis(images: int) -> dict[str, Any]:
    targets = bench_targets(images)
    environment = targets[0].environment.name
    ok = [pulled(t, Outcome.OK) for t in targets]
    lost = [pulled(t, Outcome.BLOB_UNKNOWN) for t in targets]

    metric_sink = MetricsSink(Metrics(CollectorRegistry()))
    metric_sink.track(targets)

    def sink(after: list[ImageResult]) -> DiagnosisSink:
        made = DiagnosisSink(Metrics(CollectorRegistry()), quiet_log())
        made.track(targets)
        made.control(control_ok(environment), stale_after=3600.0)
        for item in after:
            made.consume(item)
        return made

    healthy_sink = sink(ok)
    incident_sink = sink(lost)
    active = incident_sink.summary(environment)["signatures"]
    if [s["signature"] for s in active] != ["legacy_data_unreadable"]:
        raise BenchError(f"every image blob_unknown with the control ok diagnosed as {active}")

    def ramp() -> Callable[[], object]:
        fresh = sink(ok)  # every image healthy, the control ok: then the incident begins
        return lambda: feed(fresh.consume, lost, 1)

    results = ROUNDS * images
    reference = best_cpu(lambda: feed(metric_sink.consume, ok, ROUNDS), REPEATS) / results
    healthy = best_cpu(lambda: feed(healthy_sink.consume, ok, ROUNDS), REPEATS) / results
    incident = best_cpu(lambda: feed(incident_sink.consume, lost, ROUNDS), REPEATS) / results
    ramp_seconds = best_cpu(ramp, REPEATS, prepare=True)
    ramp_reference = best_cpu(lambda: feed(metric_sink.consume, lost, 1), REPEATS)
    return {
        "images": images,
        "metric_sink_us_per_result": reference * 1e6,
        "diagnosis_sink_us_per_result_healthy": healthy * 1e6,
        "diagnosis_sink_us_per_result_incident": incident * 1e6,
        "diagnosis_healthy_ratio": healthy / reference,
        "diagnosis_incident_ratio": incident / reference,
        "diagnosis_ramp_cpu_seconds": ramp_seconds,
        "diagnosis_ramp_reference_cpu_seconds": ramp_reference,
        "diagnosis_ramp_ratio": ramp_seconds / ramp_reference,
    }


# 2. The byte budget.

Layers = list[tuple[str, int]]
# An image's key, its layers, and their digests as the pull hands them to `settle`.
BudgetImage = tuple[tuple[str, str, str], Layers, list[str]]


def budget_catalog() -> tuple[list[BudgetImage], int]:
    """10,000 images of 10 distinct layers, 1 KiB to 256 MiB, log-uniform; bytes_per_hour."""
    rng = random.Random(2024)  # noqa: S311 - a repeatable catalog, not a secret
    images = []
    for i in range(BUDGET_IMAGES):
        layers = []
        for j in range(BUDGET_LAYERS_PER_IMAGE):
            n = i * BUDGET_LAYERS_PER_IMAGE + j
            layers.append((f"sha256:{n:064x}", int(2 ** rng.uniform(10, 28))))
        key = ("prod", f"team/image-{i:05d}", "v1")
        images.append((key, layers, [digest for digest, _ in layers]))
    sizes = [size for _, layers, _ in images for _, size in layers]
    required = required_bytes_per_hour(sum(sizes), max(sizes), VERIFY_WITHIN, CYCLE)
    assert required is not None
    return images, int(1.25 * required)


def simulate_round(budget: BlobBudget, images: list[BudgetImage], start: float) -> int:
    """Pull every image once within a cycle, each at its own offset; downloads are instant and
    verify. How many layers were granted."""
    granted = 0
    step = CYCLE / len(images)
    for index, (key, layers, digests) in enumerate(images):
        now = start + index * step
        for digest, size in layers:
            if budget.take(digest, size, now):
                budget.done(digest, True, size, now)
                granted += 1
        budget.settle(key, digests)
    return granted


def budget(reference_result: ImageResult) -> dict[str, Any]:
    images, bytes_per_hour = budget_catalog()
    settings = Budget.model_validate(
        {"bytes_per_hour": bytes_per_hour, "full_verify_within": f"{VERIFY_WITHIN:g}s"}
    )
    layers = BUDGET_IMAGES * BUDGET_LAYERS_PER_IMAGE

    def fresh() -> BlobBudget:
        return BlobBudget(settings, hold=2 * CYCLE, now=0.0)

    # Memory: what the budget holds once it has seen every layer, the digests being shared
    # with the caller (a pull's manifest), so they are not counted as the budget's.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    measured = fresh()
    simulate_round(measured, images, 0.0)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if measured.layers != layers:
        raise BenchError(f"the budget holds {measured.layers} layers, not {layers}")
    del measured
    digest_bytes = sum(sys.getsizeof(digest) for _, _, digests in images for digest in digests)

    def first_round() -> Callable[[], object]:
        made = fresh()
        return lambda: simulate_round(made, images, 0.0)

    steady = fresh()
    simulate_round(steady, images, 0.0)
    rounds = iter(range(1, 1000))
    granted: list[int] = []

    def steady_round() -> Callable[[], object]:
        start = next(rounds) * CYCLE
        return lambda: granted.append(simulate_round(steady, images, start))

    first = best_cpu(first_round, REPEATS, prepare=True) / layers
    later = best_cpu(steady_round, REPEATS, prepare=True) / layers
    now = next(rounds) * CYCLE
    # Housekeeping (every few seconds) and /status read the oldest age: a scan of every layer.
    oldest_age = best_cpu(lambda: steady.oldest_age(now), REPEATS)

    metric_sink = MetricsSink(Metrics(CollectorRegistry()))
    metric_sink.track(bench_targets(1))
    repeated = [reference_result] * 1000
    per_result = best_cpu(lambda: feed(metric_sink.consume, repeated, 1), REPEATS) / 1000
    per_layer = per_result / BUDGET_LAYERS_PER_IMAGE
    pulls = metric_sink.metrics.registry.get_sample_value(
        "registry_canary_image_pulls_total",
        dict(zip(("environment", "repository", "tag"), reference_result.key, strict=True)),
    )
    if not pulls:
        raise BenchError("the metric sink did not count the reference results (not tracked?)")
    return {
        "budget_layers": layers,
        "budget_catalog_gib": sum(s for _, image, _ in images for _, s in image) / 2**30,
        "budget_bytes_per_hour_gib": bytes_per_hour / 2**30,
        "budget_granted_per_round": min(granted),
        "budget_oldest_age_ms": oldest_age * 1000,
        "metric_sink_us_per_10_layer_result": per_result * 1e6,
        "metric_sink_us_per_layer": per_layer * 1e6,
        "budget_us_per_layer_first_round": first * 1e6,
        "budget_us_per_layer_steady_round": later * 1e6,
        "budget_first_round_ratio": first / per_layer,
        "budget_steady_round_ratio": later / per_layer,
        "budget_bytes_per_layer": held / layers,
        "digest_bytes_per_layer": digest_bytes / layers,
        "budget_memory_ratio": held / digest_bytes,
    }


def ten_layer_result() -> ImageResult:
    """A healthy pull of an image with a config and 10 layers."""
    layers = [blob(n, Outcome.OK) for n in range(1, BUDGET_LAYERS_PER_IMAGE + 1)]
    blobs = (blob(0, Outcome.OK, BlobKind.CONFIG), *layers)
    return result("prod", "team/image-0000", Outcome.OK, blobs)


# 3. The JUnit report.


def report_results(images: int) -> list[ImageResult]:
    """`images` pulls in 2 environments; a tenth fail with 3 blobs unknown, the rest 3 ok."""
    made = []
    for index in range(images):
        failing = index % 10 == 0
        outcome = Outcome.BLOB_UNKNOWN if failing else Outcome.OK
        blobs = tuple(blob(index * 3 + n, outcome) for n in range(3))
        environment = ("production", "staging")[index % 2]
        made.append(result(environment, f"team/image-{index // 2:04d}", outcome, blobs))
    return made


def junit(images: int) -> dict[str, Any]:
    results = report_results(images)
    document = render_junit(results)
    root = ET.fromstring(document.encode())  # noqa: S314 - a report made just above
    failing = sum(not r.ok for r in results)
    if root.get("tests") != str(images) or root.get("failures") != str(failing):
        raise BenchError(
            f"the JUnit report counts {root.get('tests')} tests and {root.get('failures')} "
            f"failures, not {images} and {failing}"
        )
    reference = best_cpu(lambda: render_json(results), REPEATS)
    rendering = best_cpu(lambda: render_junit(results), REPEATS)
    return {
        "junit_results": images,
        "junit_failing": failing,
        "json_ms": reference * 1000,
        "junit_ms": rendering * 1000,
        "junit_ratio": rendering / reference,
        "json_bytes": len(render_json(results).encode()),
        "junit_bytes": len(document.encode()),
    }


# 4. The control probe.


def control_config(url: str, pin: dict[str, str] | None = None) -> Config:
    image: dict[str, str] = {"repository": CATALOG_REPOSITORY, "tag": "v1"}
    if pin is not None:
        image.update(pin)
    document = {
        "defaults": {"blob_check": "get", "timeout": "30s"},
        "environments": [
            {"name": "local", "url": url, "control": {"repository": CONTROL_REPOSITORY}}
        ],
        "images": [image],
    }
    return parse_config(document, "bench")


async def control_rounds(url: str) -> dict[str, Any]:
    config = control_config(url)
    environment = config.environments[0]
    settings = config.control_settings(environment)
    assert settings is not None
    probe = ControlProbe(environment, *settings)
    async with RegistryClient(environment) as client:
        reports = await seed(client, list(config.images), layers=1, layer_size=LAYER_BYTES)
        if [r.action for r in reports] != ["pushed"] or reports[0].digest is None:
            raise BenchError(f"seeding the catalog image: {reports}")
        pinned = control_config(url, {"digest": reports[0].digest, "published": PUBLISHED})
        (target,) = pinned.targets()

        async def one_round() -> tuple[float, float, ControlResult]:
            cpu, wall = time.process_time(), time.perf_counter()
            done = await probe.round(client)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if not done.ok or not done.deleted:
                raise BenchError(
                    f"control round {done.outcome} (step {done.failed_step}, deleted "
                    f"{done.deleted}): {done.evidence}"
                )
            return cpu, wall, done

        async def one_pull() -> tuple[float, float, ImageResult]:
            cpu, wall = time.process_time(), time.perf_counter()
            done = await probe_image(client, target)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if not done.ok:
                raise BenchError(f"pull of {CATALOG_REPOSITORY}: {done.outcome}")
            return cpu, wall, done

        # Warm-up: the connection pool, and the first round's delete that tells the probe
        # the registry deletes (from then on each round pushes under a tag of its own).
        await one_round()
        _, _, pull = await one_pull()
        rounds, pulls = [], []
        for _ in range(CONTROL_REPEATS):
            rounds.append(await one_round())
            pulls.append(await one_pull())
    control = rounds[-1][2]
    assert control.pull is not None
    shape = (len(control.pull.blobs), len(control.pull.manifests))
    other = (len(pull.blobs), len(pull.manifests))
    if shape != other:
        raise BenchError(f"(blobs, manifests): the control pulled {shape}, the catalog {other}")
    writes = Counter(f"{operation}:{outcome}" for operation, outcome in control.writes)
    cpu = min(r[0] for r in rounds)
    fastest = min(rounds, key=lambda r: r[1])
    wall = fastest[1]
    pull_cpu = min(p[0] for p in pulls)
    pull_wall = min(p[1] for p in pulls)
    return {
        "control_cpu_ms": cpu * 1000,
        "control_wall_ms": wall * 1000,
        "pull_cpu_ms": pull_cpu * 1000,
        "pull_wall_ms": pull_wall * 1000,
        "control_cpu_ratio": cpu / pull_cpu,
        "control_wall_ratio": wall / pull_wall,
        "control_writes_per_round": len(control.writes),
        "control_writes": dict(sorted(writes.items())),
        "control_step_ms": {str(step): s * 1000 for step, s in fastest[2].durations},
        "control_wall_ms_each": [round(r[1] * 1000, 2) for r in rounds],
        "pull_wall_ms_each": [round(p[1] * 1000, 2) for p in pulls],
        "control_blobs_pulled": len(control.pull.blobs),
    }


def control(work: Path) -> dict[str, Any]:
    with start_registry(work / "registry") as registry:
        return asyncio.run(control_rounds(registry.url))


def bench(images: int, work: Path) -> dict[str, Any]:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40)
    )  # errors only: the benchmark's output is its report
    figures = diagnosis(images)
    figures.update(budget(ten_layer_result()))
    figures.update(junit(images))
    figures.update(control(work))
    return figures


def report(f: dict[str, Any]) -> str:
    n = f["images"]
    layers = f["budget_layers"]
    writes = ", ".join(f"{count} {name}" for name, count in f["control_writes"].items())
    steps = ", ".join(f"{step} {ms:.1f}" for step, ms in f["control_step_ms"].items())
    lines = [
        f"diagnosis sink, {n} images in one environment",
        f"  metric sink (reference)          {f['metric_sink_us_per_result']:8.1f} µs per result",
        f"  diagnosis sink, healthy pulls    {f['diagnosis_sink_us_per_result_healthy']:8.1f} µs"
        f"  ({f['diagnosis_healthy_ratio']:.2f}× the metric sink; target ≤ 0.25×: "
        f"{verdict(f['diagnosis_healthy_ratio'] <= 0.25)})",
        f"  diagnosis sink, all blob_unknown {f['diagnosis_sink_us_per_result_incident']:8.1f} µs"
        f"  ({f['diagnosis_incident_ratio']:.2f}× the metric sink; target ≤ 0.25×: "
        f"{verdict(f['diagnosis_incident_ratio'] <= 0.25)})",
        f"  ramp, {n} turning blob_unknown  {f['diagnosis_ramp_cpu_seconds'] * 1000:8.1f} ms CPU"
        f"  ({f['diagnosis_ramp_ratio']:.2f}× {n} metric sink results)",
        "",
        f"byte budget, {layers} layers ({layers // BUDGET_LAYERS_PER_IMAGE} images of "
        f"{BUDGET_LAYERS_PER_IMAGE}), {f['budget_catalog_gib']:.0f} GiB, "
        f"{f['budget_bytes_per_hour_gib']:.0f} GiB per hour",
        f"  metric sink per layer (ref.)     {f['metric_sink_us_per_layer']:8.2f} µs"
        f"  (a 10-layer pull's result, {f['metric_sink_us_per_10_layer_result']:.1f} µs, / 10)",
        f"  first round (every layer new)    {f['budget_us_per_layer_first_round']:8.2f} µs"
        f" per layer decision  ({f['budget_first_round_ratio']:.2f}× the reference)",
        f"  later round                      {f['budget_us_per_layer_steady_round']:8.2f} µs"
        f" per layer decision  ({f['budget_steady_round_ratio']:.2f}× the reference; "
        f"{f['budget_granted_per_round']} layers granted per round)",
        f"  memory held                      {f['budget_bytes_per_layer']:8.0f} B per layer"
        f"  ({f['budget_memory_ratio']:.2f}× the digest strings, "
        f"{f['digest_bytes_per_layer']:.0f} B per layer)",
        f"  oldest_age (scans every layer)   {f['budget_oldest_age_ms']:8.2f} CPU ms"
        "  (housekeeping, every few seconds, and /status)",
        "",
        f"JUnit report, {f['junit_results']} results in 2 environments, "
        f"{f['junit_failing']} failing",
        f"  render_json (reference)          {f['json_ms']:8.1f} CPU ms, "
        f"{f['json_bytes'] / 1024:.0f} KiB",
        f"  render_junit                     {f['junit_ms']:8.1f} CPU ms, "
        f"{f['junit_bytes'] / 1024:.0f} KiB  ({f['junit_ratio']:.2f}× the JSON's CPU, "
        f"{f['junit_bytes'] / f['json_bytes']:.2f}× its size)",
        "",
        f"control probe, real registry on loopback, best of {CONTROL_REPEATS}",
        f"  probe_image of a 1-layer image   {f['pull_cpu_ms']:8.2f} CPU ms, "
        f"{f['pull_wall_ms']:.2f} ms wall (reference)",
        f"  ControlProbe.round               {f['control_cpu_ms']:8.2f} CPU ms, "
        f"{f['control_wall_ms']:.2f} ms wall  ({f['control_cpu_ratio']:.2f}× the pull's CPU, "
        f"{f['control_wall_ratio']:.2f}× its wall time)",
        f"  writes per round                 {f['control_writes_per_round']:8d}  ({writes})",
        f"  steps of the fastest round       {steps} ms wall",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    return images_main(
        __doc__, IMAGES, OUTPUT, (REGISTRY_BINARY,), "canary-bench-diagnosis-", bench, report
    )


if __name__ == "__main__":
    sys.exit(main())
