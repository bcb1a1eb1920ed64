"""`registry-canary run` end to end: the daemon as a child process against the real registry,
scraped by a real Prometheus and read back through its query API, with signals, reloads,
slow pulls and a dead environment."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from canary import __version__
from canary.results import Outcome
from canary.testbed import LocalRegistry, free_port, start_registry
from tests.conftest import seed_images, write_config
from tests.daemon_fixtures import (
    DEFAULTS,
    DaemonFactory,
    DaemonProcess,
    PrometheusServer,
    Sample,
    StallingProxy,
    config_blob_path,
    daemon_catalog,
    eventually,
    running_prometheus,
)

pytestmark = pytest.mark.registry

Entry = tuple[str, str, str]
Series = list[tuple[dict[str, str], float]]

ALPINE = {"repository": "canary/alpine", "tag": "2023-05", "published": "2023-05-01T12:00:00Z"}
BUSYBOX = {"repository": "canary/busybox", "tag": "1.36", "published": "2023-02-14T09:30:00Z"}
DEBIAN = {"repository": "canary/debian", "tag": "12"}
INCIDENT = {"repository": "canary/incident", "tag": "v1"}
LOST = {"repository": "canary/lost", "tag": "v1"}  # its links are removed once seeded
SEEDED = [ALPINE, BUSYBOX, DEBIAN, INCIDENT, LOST]
SEED_SIZES = ("--layers", "2", "--layer-size", "4KiB")
INTERVAL = 1.0  # DEFAULTS["interval"]


def entry(environment: str, image: dict[str, str]) -> Entry:
    return environment, image["repository"], image["tag"]


def entries(series: Series) -> dict[Entry, float]:
    """Series keyed by (environment, repository, tag); each entry must appear once."""
    found: dict[Entry, float] = {}
    for labels, value in series:
        key = (labels["environment"], labels["repository"], labels["tag"])
        assert key not in found, f"two series for {key}: {series}"
        found[key] = value
    return found


def samples_of(samples: list[Sample], name: str, **match: str) -> Series:
    return [
        (s.labels, s.value)
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    ]


def single(samples: list[Sample], name: str) -> float:
    found = samples_of(samples, name)
    assert len(found) == 1, found
    return found[0][1]


def status_image(status: dict[str, Any], key: Entry) -> dict[str, Any]:
    images: list[dict[str, Any]] = status["images"]
    found = [i for i in images if (i["environment"], i["repository"], i["tag"]) == key]
    assert len(found) == 1, images
    return found[0]


def probed_counts(daemon: DaemonProcess) -> dict[Entry, int]:
    counts: dict[Entry, int] = {}
    for line in daemon.events("image_probed"):
        key = (line["environment"], line["repository"], line["tag"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def advanced(
    read: Callable[[], dict[Entry, float]], since: dict[Entry, float]
) -> dict[Entry, float]:
    """Wait until every entry's timestamp is at least one interval past `since`; the new reading."""

    def check() -> dict[Entry, float]:
        now = read()
        assert set(now) == set(since), now
        behind = {k: (since[k], v) for k, v in now.items() if v - since[k] < INTERVAL}
        assert not behind, f"not advanced by {INTERVAL}s: {behind}"
        return now

    return eventually(check, timeout=15)


def exit_status(daemon: DaemonProcess, within: float) -> int:
    try:
        return daemon.process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not exit within {within}s\n{daemon.diagnostics()}")


@pytest.fixture(scope="module")
def seeded_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One real registry for the module with every image seeded; canary/lost's links removed."""
    root = tmp_path_factory.mktemp("daemon-registry")
    with start_registry(root / "registry") as registry:
        config = write_config(
            root, {"environments": [{"name": "local", "url": registry.url}], "images": SEEDED}
        )
        seed_images(config, *SEED_SIZES)
        registry.remove_layer_links(LOST["repository"])
        yield registry


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping every 1 s; each test adds its daemon as a job."""
    yield from running_prometheus(tmp_path_factory.mktemp("prometheus"))


@pytest.fixture
def local(seeded_registry: LocalRegistry) -> dict[str, Any]:
    return {"name": "local", "url": seeded_registry.url}


@pytest.fixture
def stalling_proxy(
    seeded_registry: LocalRegistry,
) -> Iterator[Callable[[set[str], float], StallingProxy]]:
    """Makes proxies in front of the registry that hold the given paths for a while."""
    proxies: list[StallingProxy] = []

    def make(paths: set[str], seconds: float) -> StallingProxy:
        proxy = StallingProxy(seeded_registry.url, paths, seconds)
        proxies.append(proxy)
        proxy.start()
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.fixture(scope="module")
def healthy(
    seeded_registry: LocalRegistry,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DaemonProcess]:
    """A daemon on three healthy images, scraped by Prometheus as job `healthy`."""
    factory = DaemonFactory(tmp_path_factory.mktemp("healthy"))
    local = {"name": "local", "url": seeded_registry.url}
    try:
        daemon = factory.start("healthy", daemon_catalog([local], [ALPINE, BUSYBOX, DEBIAN]))
        prometheus.scrape("healthy", daemon.port)
        yield daemon
    finally:
        factory.stop_all()


class TestScrapedAndHealthy:
    def test_every_entry_reported_ok_through_prometheus(
        self, healthy: DaemonProcess, prometheus: PrometheusServer
    ) -> None:
        """Prometheus sees the target up, build_info 1 and image_pull_success 1 for every entry."""
        assert prometheus.values('up{job="healthy"}') == [({"job": "healthy"}, 1.0)]
        assert prometheus.values('registry_canary_build_info{job="healthy"}') == [
            ({"job": "healthy", "version": __version__}, 1.0)
        ]
        expected = {entry("local", image): 1.0 for image in (ALPINE, BUSYBOX, DEBIAN)}

        def all_ok() -> None:
            found = prometheus.values('registry_canary_image_pull_success{job="healthy"}')
            assert entries(found) == expected

        eventually(all_ok, timeout=20)

    def test_blob_unknown_series_exist_at_zero(
        self, healthy: DaemonProcess, prometheus: PrometheusServer
    ) -> None:
        """blob_unknown counters are exported at 0 for every entry and kind before any failure."""
        query = 'registry_canary_blob_fetches_total{job="healthy",outcome="blob_unknown"}'
        found = prometheus.values(query)
        keyed = {
            (labels["environment"], labels["repository"], labels["tag"], labels["kind"]): value
            for labels, value in found
        }
        assert len(keyed) == len(found)
        assert keyed == {
            (*entry("local", image), kind): 0.0
            for image in (ALPINE, BUSYBOX, DEBIAN)
            for kind in ("config", "layer")
        }

        def pulled() -> None:  # they stay at 0 while pulls succeed and the ok counters rise
            ok = prometheus.values(
                'registry_canary_blob_fetches_total{job="healthy",outcome="ok",kind="layer"}'
            )
            assert len(ok) == 3, ok
            assert all(value >= 2 for _, value in ok), ok

        eventually(pulled, timeout=20)
        assert all(value == 0 for _, value in prometheus.values(query))

    def test_promtool_finds_no_problems(self, healthy: DaemonProcess) -> None:
        """`promtool check metrics` accepts the daemon's exposition without a lint line."""

        def populated() -> bytes:
            status, body = healthy.get("/metrics")
            assert status == 200
            assert b"registry_canary_image_pull_duration_seconds_count" in body
            assert b"registry_canary_tag_published_timestamp_seconds{" in body
            return body

        body = eventually(populated, timeout=20)
        done = subprocess.run(
            ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


class TestIncident:
    def test_lost_links_fail_one_repository_until_repushed(
        self,
        seeded_registry: LocalRegistry,
        prometheus: PrometheusServer,
        daemons: DaemonFactory,
        local: dict[str, Any],
    ) -> None:
        """Links removed for one repository: its blob_unknown rises and pull_success drops to 0
        in Prometheus while the others stay 1, /status shows the evidence, and a repush heals it."""
        images = [ALPINE, BUSYBOX, INCIDENT]
        daemon = daemons.start("incident", daemon_catalog([local], images))
        prometheus.scrape("incident", daemon.port)
        healthy = {entry("local", image): 1.0 for image in images}
        success = 'registry_canary_image_pull_success{job="incident"}'

        def pull_success_is(expected: dict[Entry, float]) -> Callable[[], None]:
            def check() -> None:
                assert entries(prometheus.values(success)) == expected

            return check

        eventually(pull_success_is(healthy), timeout=20)

        seeded_registry.remove_layer_links(INCIDENT["repository"])
        broken = {**healthy, entry("local", INCIDENT): 0.0}
        rising = (
            'increase(registry_canary_blob_fetches_total{job="incident",outcome="blob_unknown",'
            'repository="canary/incident"}[1m])'
        )

        def paged() -> None:
            pull_success_is(broken)()
            kinds = {labels["kind"] for labels, value in prometheus.values(rising) if value > 0}
            assert kinds == {"config", "layer"}

        eventually(paged, timeout=20)
        others = prometheus.values(
            'registry_canary_blob_fetches_total{job="incident",outcome="blob_unknown",'
            'repository!="canary/incident"}'
        )
        assert len(others) == 4, others
        assert all(value == 0 for _, value in others), others

        def evidence() -> None:
            _, status = daemon.get_json("/status")
            image = status_image(status, entry("local", INCIDENT))
            assert (image["ok"], image["outcome"], image["suspect"]) == (
                False,
                "blob_unknown",
                True,
            )
            assert image["published"][0]["status"] == "missing"
            blobs = image["result"]["blobs"]
            assert sorted(blob["kind"] for blob in blobs) == ["config", "layer", "layer"]
            for blob in blobs:
                assert (blob["outcome"], blob["first_outcome"], blob["status"]) == (
                    "blob_unknown",
                    "blob_unknown",
                    404,
                ), blob
                assert (blob["evidence"]["status"], blob["evidence"]["code"]) == (
                    404,
                    "BLOB_UNKNOWN",
                )
            for other in (ALPINE, BUSYBOX):
                fine = status_image(status, entry("local", other))
                assert (fine["ok"], fine["suspect"]) == (True, False)

        eventually(evidence, timeout=10)

        assert "# repushed" in seed_images(daemon.config, *SEED_SIZES, "--repush")
        eventually(pull_success_is(healthy), timeout=30)
        _, status = daemon.get_json("/status")
        recovered = status_image(status, entry("local", INCIDENT))
        assert (recovered["ok"], recovered["outcome"]) == (True, "ok")


class TestDeadEnvironment:
    def test_live_environment_keeps_probing(
        self,
        prometheus: PrometheusServer,
        daemons: DaemonFactory,
        local: dict[str, Any],
    ) -> None:
        """A registry nobody listens for: connection_error counted for it, readiness reached once
        both environments finished a round, and the live environment's pulls keep advancing."""
        dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
        daemon = daemons.start("dead", daemon_catalog([local, dead], [ALPINE, BUSYBOX]))
        prometheus.scrape("dead_env", daemon.port)

        def ready() -> None:
            assert daemon.get_json("/readyz") == (
                200,
                {"ready": True, "environments": {"local": True, "dead": True}},
            )

        eventually(ready, timeout=15)
        _, status = daemon.get_json("/status")
        assert status["ready"] is True
        outcomes = {
            (i["environment"], i["repository"]): (i["ok"], i["outcome"]) for i in status["images"]
        }
        assert outcomes == {
            ("local", "canary/alpine"): (True, "ok"),
            ("local", "canary/busybox"): (True, "ok"),
            ("dead", "canary/alpine"): (False, "connection_error"),
            ("dead", "canary/busybox"): (False, "connection_error"),
        }

        def refused() -> None:
            found = entries(
                prometheus.values(
                    'registry_canary_manifest_fetches_total{job="dead_env",environment="dead",'
                    'outcome="connection_error"}'
                )
            )
            assert set(found) == {entry("dead", ALPINE), entry("dead", BUSYBOX)}
            assert all(value > 0 for value in found.values()), found

        eventually(refused, timeout=15)

        def live_stamps() -> dict[Entry, float]:
            found = entries(
                prometheus.values(
                    'registry_canary_image_last_probe_timestamp_seconds{job="dead_env",'
                    'environment="local"}'
                )
            )
            assert set(found) == {entry("local", ALPINE), entry("local", BUSYBOX)}
            return found

        first = eventually(live_stamps, timeout=15)
        second = advanced(live_stamps, since=first)
        advanced(live_stamps, since=second)
        success = entries(prometheus.values('registry_canary_image_pull_success{job="dead_env"}'))
        assert success == {
            entry("local", ALPINE): 1.0,
            entry("local", BUSYBOX): 1.0,
            entry("dead", ALPINE): 0.0,
            entry("dead", BUSYBOX): 0.0,
        }


class TestReload:
    def test_sighup_applies_a_good_file_and_keeps_the_last_good_one(
        self, daemons: DaemonFactory, local: dict[str, Any]
    ) -> None:
        """SIGHUP with an image removed drops its series; with an invalid file it keeps probing
        the last good catalog, exports reload failure and logs the problem's dotted location."""
        document = daemon_catalog([local], [ALPINE, BUSYBOX, DEBIAN])
        daemon = daemons.start("reload", document)
        success = "registry_canary_image_pull_success"
        stamp = "registry_canary_config_last_reload_success_timestamp_seconds"

        def all_ok() -> float:
            samples = daemon.metrics()
            assert entries(samples_of(samples, success)) == {
                entry("local", image): 1.0 for image in (ALPINE, BUSYBOX, DEBIAN)
            }
            assert single(samples, "registry_canary_config_last_reload_successful") == 1.0
            return single(samples, stamp)

        loaded_at = eventually(all_ok, timeout=15)

        daemons.config("reload", daemon_catalog([local], [ALPINE, BUSYBOX]))
        daemon.send(signal.SIGHUP)
        remaining = {entry("local", ALPINE), entry("local", BUSYBOX)}

        def removed() -> None:
            samples = daemon.metrics()
            assert set(entries(samples_of(samples, success))) == remaining
            leftovers = [s for s in samples if s.labels.get("repository") == DEBIAN["repository"]]
            assert leftovers == []
            assert single(samples, "registry_canary_config_last_reload_successful") == 1.0
            assert single(samples, stamp) > loaded_at

        eventually(removed, timeout=10)
        reloaded = daemon.events("config_reloaded")
        assert len(reloaded) == 1
        assert (reloaded[0]["images"], reloaded[0]["probes_per_round"]) == (2, 2)

        invalid = daemon_catalog([local], [ALPINE, BUSYBOX])
        invalid["defaults"] = {**DEFAULTS, "intreval": "5s"}
        daemons.config("reload", invalid)
        daemon.send(signal.SIGHUP)

        def rejected() -> None:
            samples = daemon.metrics()
            assert single(samples, "registry_canary_config_last_reload_successful") == 0.0
            assert len(daemon.events("config_reload_failed")) == 1

        eventually(rejected, timeout=10)
        failed = daemon.events("config_reload_failed")[0]
        assert failed["path"] == str(daemon.config)
        assert failed["problems"] == ["defaults.intreval: unknown key"]

        def last_probes() -> dict[Entry, float]:
            samples = daemon.metrics()
            assert set(entries(samples_of(samples, success))) == remaining
            return entries(
                samples_of(samples, "registry_canary_image_last_probe_timestamp_seconds")
            )

        first = eventually(last_probes, timeout=10)
        advanced(last_probes, since=first)
        assert entries(samples_of(daemon.metrics(), success)) == dict.fromkeys(remaining, 1.0)
        assert daemon.process.poll() is None


class TestGracefulShutdown:
    def _start_stalled(
        self,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
        name: str,
        grace: str,
        stall: float,
    ) -> tuple[DaemonProcess, StallingProxy]:
        """A daemon pulling canary/alpine through a proxy that holds its config blob."""
        path = config_blob_path(seeded_registry.url, ALPINE["repository"], ALPINE["tag"])
        proxy = stalling_proxy({path}, stall)
        slow = {"name": "slow", "url": proxy.url}
        document = daemon_catalog([slow], [ALPINE], daemon={"grace_period": grace})
        daemon = daemons.start(name, document)
        assert proxy.stalled.wait(timeout=15), daemon.diagnostics()
        return daemon, proxy

    def test_in_flight_pull_finishes_within_grace(
        self,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
    ) -> None:
        """SIGTERM mid-pull: `stopping` counts it in flight, it finishes and is logged, then
        `stopped` with nothing cancelled, and the daemon exits 0."""
        daemon, proxy = self._start_stalled(
            daemons, stalling_proxy, seeded_registry, "graceful", grace="5s", stall=2.0
        )
        daemon.send(signal.SIGTERM)
        assert exit_status(daemon, within=5 + 10) == 0, daemon.diagnostics()

        logs = daemon.logs()
        events = [line["event"] for line in logs]
        assert events.count("stopping") == 1, events
        assert events[-1] == "stopped", events
        stopping = logs[events.index("stopping")]
        assert stopping["in_flight"] >= 1
        assert stopping["grace_seconds"] == 5.0
        probed = [
            (position, line["repository"], line["outcome"])
            for position, line in enumerate(logs)
            if line["event"] == "image_probed"
        ]
        # The stalled pull was the first: its line is the only one, and comes after `stopping`.
        assert len(probed) == 1, probed
        position, repository, outcome = probed[0]
        assert events.index("stopping") < position < len(logs) - 1
        assert (repository, outcome) == (ALPINE["repository"], "ok")
        assert logs[-1]["cancelled"] == 0
        assert proxy.stalled_arrivals == 1  # no pull started after SIGTERM

    def _cancelled(
        self,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
    ) -> list[dict[str, Any]]:
        """SIGTERM while a pull stalls far past a 1 s grace period; the daemon's log lines."""
        daemon, _ = self._start_stalled(
            daemons, stalling_proxy, seeded_registry, "cancelled", grace="1s", stall=60.0
        )
        daemon.send(signal.SIGTERM)
        # The grace period, then up to 5 s for cancelled pulls to unwind, and a margin.
        assert exit_status(daemon, within=1 + 5 + 10) == 0, daemon.diagnostics()
        return daemon.logs()

    def test_pull_longer_than_grace_is_cancelled(
        self,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
    ) -> None:
        """SIGTERM while a pull stalls past the grace period: it is cancelled, not logged as
        probed, `stopped` counts it, and the daemon still exits 0."""
        logs = self._cancelled(daemons, stalling_proxy, seeded_registry)
        events = [line["event"] for line in logs]
        assert events.count("stopping") == 1, events
        assert events[-1] == "stopped", events
        stopping = logs[events.index("stopping")]
        assert stopping["in_flight"] >= 1
        assert stopping["grace_seconds"] == 1.0
        assert logs[-1]["cancelled"] >= 1
        assert "image_probed" not in events

    def test_cancelled_pull_is_not_logged_as_an_error(
        self,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
    ) -> None:
        """A pull cancelled by a graceful shutdown is expected, so nothing is logged at error."""
        logs = self._cancelled(daemons, stalling_proxy, seeded_registry)
        assert [line for line in logs if line["level"] == "error"] == []


class TestOverlap:
    def test_a_pull_longer_than_its_interval_is_never_doubled(
        self,
        prometheus: PrometheusServer,
        daemons: DaemonFactory,
        stalling_proxy: Callable[[set[str], float], StallingProxy],
        seeded_registry: LocalRegistry,
    ) -> None:
        """A 2.5 s pull on a 1 s interval: the runs in between are counted as skipped (overlap)
        and the registry never sees two requests for the same blob at once."""
        path = config_blob_path(seeded_registry.url, ALPINE["repository"], ALPINE["tag"])
        proxy = stalling_proxy({path}, 2.5)
        slow = {"name": "slow", "url": proxy.url}
        # Skips are logged at debug (the counter is the signal); this test reads the lines too.
        document = daemon_catalog([slow], [ALPINE], daemon={"log_level": "debug"})
        daemon = daemons.start("overlap", document)
        prometheus.scrape("overlap", daemon.port)
        skipped = (
            'registry_canary_probes_skipped_total{job="overlap",environment="slow",'
            'reason="overlap"}'
        )

        def skipped_between_pulls() -> None:
            found = prometheus.values(skipped)
            assert len(found) == 1, found
            assert found[0][1] > 0, found
            assert proxy.stalled_arrivals >= 2
            assert len(daemon.events("image_probed")) >= 1

        eventually(skipped_between_pulls, timeout=20)
        assert proxy.max_open[path] == 1, proxy.requests
        assert all(count == 1 for count in proxy.max_open.values()), proxy.max_open
        probed = daemon.events("image_probed")
        assert all(line["outcome"] == "ok" for line in probed), probed
        skips = daemon.events("probe_skipped")
        assert skips
        assert {(line["job"], line["reason"]) for line in skips} == {
            ("slow/canary/alpine:2023-05", "overlap")
        }


class TestLogs:
    def test_json_lines_one_per_pull_with_failures(
        self, daemons: DaemonFactory, local: dict[str, Any]
    ) -> None:
        """Stdout is JSON lines: `started` with the catalog size, one `image_probed` per pull
        with its identity, outcome and duration, and the failures of failed pulls."""
        dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
        lost = {**LOST, "environments": ["local"]}
        daemon = daemons.start("logs", daemon_catalog([local, dead], [ALPINE, lost]))
        keys = {entry("local", ALPINE), entry("local", LOST), entry("dead", ALPINE)}

        started = daemon.events("started")
        assert len(started) == 1
        assert (
            started[0]["environments"],
            started[0]["images"],
            started[0]["probes_per_round"],
            started[0]["version"],
            started[0]["listen"],
        ) == (2, 2, 3, __version__, f"127.0.0.1:{daemon.port}")

        def two_rounds() -> None:
            counts = probed_counts(daemon)
            assert set(counts) == keys, counts
            assert min(counts.values()) >= 2, counts

        eventually(two_rounds, timeout=20)

        def one_line_per_pull() -> None:
            before = probed_counts(daemon)
            samples = daemon.metrics()
            # Nothing finished while /metrics was read, so the two describe the same pulls.
            assert probed_counts(daemon) == before
            pulls: dict[Entry, float] = {}
            for labels, value in samples_of(samples, "registry_canary_manifest_fetches_total"):
                key = (labels["environment"], labels["repository"], labels["tag"])
                pulls[key] = pulls.get(key, 0) + value
            assert pulls == {key: float(count) for key, count in before.items()}
            per_environment = {
                labels["environment"]: value
                for labels, value in samples_of(
                    samples, "registry_canary_image_pull_duration_seconds_count"
                )
            }
            assert per_environment == {
                "local": float(before[entry("local", ALPINE)] + before[entry("local", LOST)]),
                "dead": float(before[entry("dead", ALPINE)]),
            }

        eventually(one_line_per_pull, timeout=10)

        assert daemon.stop() == 0
        text = daemon.stdout.read_text(encoding="utf-8")
        assert text.endswith("\n")
        logs = daemon.logs()  # json.loads of every line
        assert len(logs) == len(text.splitlines())
        assert all(isinstance(line, dict) and isinstance(line["event"], str) for line in logs)
        events = [line["event"] for line in logs]
        assert events[0] == "started", events
        assert events[-1] == "stopped", events
        assert events.count("stopping") == 1, events

        outcomes = {str(o) for o in Outcome}
        for line in daemon.events("image_probed"):
            key = (line["environment"], line["repository"], line["tag"])
            assert key in keys
            assert line["outcome"] in outcomes
            assert isinstance(line["duration_seconds"], float)
            assert line["duration_seconds"] >= 0
            if key == entry("local", ALPINE):
                assert line["outcome"] == "ok", line
                assert "failures" not in line, line
            elif key == entry("local", LOST):
                assert line["outcome"] == "blob_unknown", line
                assert sorted(f["kind"] for f in line["failures"]) == ["config", "layer", "layer"]
                for failure in line["failures"]:
                    assert failure["digest"].startswith("sha256:")
                    assert (failure["outcome"], failure["hop"], failure["status"]) == (
                        "blob_unknown",
                        "registry",
                        404,
                    ), failure
            else:
                assert line["outcome"] == "connection_error", line
                [failure] = line["failures"]
                assert (failure["kind"], failure["outcome"], failure["hop"], failure["status"]) == (
                    "manifest",
                    "connection_error",
                    "registry",
                    None,
                ), failure
                assert failure["digest"] is None  # the tag's manifest: no digest was learnt
                assert failure["detail"]
