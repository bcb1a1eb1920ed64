"""Detection end to end, every component real and on loopback: the registry with a seeded
catalog, the daemon at a 1 s interval, Prometheus evaluating the shipped rules every second,
and two Alertmanagers running the shipped routing with a fake PagerDuty behind them.

- "direct" receives only the daemon's own alerts: it proves the path that works without
  Prometheus.
- "shared" receives the rule's alerts from Prometheus and the daemon's: the two must be one
  alert there, and it pages through the shipped routing.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from canary.testbed import LocalRegistry, start_registry
from tests.alertmanager_fixtures import (
    PAGERDUTY_PATH,
    TEST_GROUP_INTERVAL_SECONDS,
    AlertmanagerServer,
    NotificationReceiver,
    running_alertmanager,
    running_receiver,
    shipped_config_for_test,
)
from tests.conftest import REPO_ROOT, seed_images, write_config
from tests.daemon_fixtures import (
    DaemonFactory,
    DaemonProcess,
    PrometheusServer,
    at_least,
    daemon_catalog,
    eventually,
    http_get,
    parse_exposition,
    running_prometheus,
)

pytestmark = pytest.mark.registry

RULES = REPO_ROOT / "config" / "prometheus" / "rules.yml"
ALERT = "RegistryCanaryBlobUnknown"
LOST = "canary/lost"
HEALTHY = ("canary/alpine", "canary/busybox")
IMAGES = [{"repository": r, "tag": "v1"} for r in (*HEALTHY, LOST)]
SEED_SIZES = ("--layers", "2", "--layer-size", "4KiB")
DETECTION_SECONDS = 30.0


@dataclass
class Stack:
    registry: LocalRegistry
    daemon: DaemonProcess
    prometheus: PrometheusServer
    direct: AlertmanagerServer
    shared: AlertmanagerServer
    pagerduty: NotificationReceiver


@contextlib.contextmanager
def stack(root: Path, control: str | None = None) -> Iterator[Stack]:
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(start_registry(root / "registry"))
        seed_config = write_config(
            root, {"environments": [{"name": "local", "url": registry.url}], "images": IMAGES}
        )
        seed_images(seed_config, *SEED_SIZES)
        receiver = stack.enter_context(contextlib.contextmanager(running_receiver)())
        alertmanager = shipped_config_for_test(receiver.url, root / "am-files")
        direct = stack.enter_context(
            contextlib.contextmanager(running_alertmanager)(root / "am-direct", alertmanager)
        )
        shared = stack.enter_context(
            contextlib.contextmanager(running_alertmanager)(root / "am-shared", alertmanager)
        )
        environment: dict[str, Any] = {"name": "local", "url": registry.url}
        if control is not None:
            environment["control"] = {"repository": control, "interval": "1s"}
        document = daemon_catalog([environment], IMAGES)
        document["alerting"] = {
            "alertmanager": {"url": [direct.url, shared.url], "resend_interval": "1s"}
        }
        (root / "daemon").mkdir()
        factory = DaemonFactory(root / "daemon")
        stack.callback(factory.stop_all)
        daemon = factory.start("canary", document)
        prometheus = stack.enter_context(
            contextlib.contextmanager(running_prometheus)(
                root / "prometheus", rule_files=[RULES], alertmanagers=[shared.url]
            )
        )
        prometheus.scrape("registry-canary", daemon.port)
        yield Stack(registry, daemon, prometheus, direct, shared, receiver)


def blob_unknown(alerts: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The label sets of the RegistryCanaryBlobUnknown alerts in an Alertmanager's list."""
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == ALERT]


def about_healthy(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("repository") in HEALTHY]


def pages(receiver: NotificationReceiver, alertmanager: AlertmanagerServer) -> list[Any]:
    """The PagerDuty events one Alertmanager sent; each names itself in client_url."""
    return [
        body
        for body in receiver.bodies(PAGERDUTY_PATH)
        if body["client_url"].startswith(alertmanager.url + "/")
    ]


EXPECTED = {"alertname": ALERT, "environment": "local", "repository": LOST, "severity": "page"}


def test_lost_blob_links_page_from_both_paths_and_resolve_on_repush(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Removing one repository's blob links raises RegistryCanaryBlobUnknown for it alone, in
    Alertmanager from the daemon and from Prometheus as one alert that pages; a repush resolves it.
    """
    with stack(tmp_path) as s:

        def all_verified() -> None:
            found = s.prometheus.values("registry_canary_image_blobs_unknown")
            assert [(labels["repository"], value) for labels, value in found] == sorted(
                (r, 0.0) for r in (*HEALTHY, LOST)
            )

        eventually(all_verified, timeout=DETECTION_SECONDS)
        assert s.direct.alerts(active_only=False) == []
        assert s.shared.alerts(active_only=False) == []

        s.registry.remove_layer_links(LOST)
        injected = time.monotonic()
        seen: dict[str, float] = {}

        def detected() -> None:
            if "daemon → Alertmanager" not in seen and blob_unknown(s.direct.alerts()):
                seen["daemon → Alertmanager"] = time.monotonic() - injected
            firing = [a for a in s.prometheus.alerts() if a["state"] == "firing"]
            if "Prometheus rule firing" not in seen and blob_unknown(firing):
                seen["Prometheus rule firing"] = time.monotonic() - injected
            for name, alertmanager in (("direct", s.direct), ("shared", s.shared)):
                label = f"PagerDuty event from the {name} Alertmanager"
                if label not in seen and pages(s.pagerduty, alertmanager):
                    seen[label] = time.monotonic() - injected
            assert len(seen) == 4, f"seen so far: {seen}"

        eventually(detected, timeout=DETECTION_SECONDS, poll=0.05)

        assert blob_unknown(s.direct.alerts()) == [EXPECTED]
        # Both paths post this label set to "shared"; Alertmanager holds it once.
        assert blob_unknown(s.shared.alerts(active_only=False)) == [EXPECTED]
        rule_alerts = [a for a in s.prometheus.alerts() if a["labels"]["alertname"] == ALERT]
        assert [a["labels"] for a in rule_alerts] == [EXPECTED]
        # Prometheus's own counter of alerts it sent to "shared": the rule's path delivered too.
        status, body = http_get(s.prometheus.url + "/metrics")
        assert status == 200
        sent = [
            sample.value
            for sample in parse_exposition(body.decode())
            if sample.name == "prometheus_notifications_sent_total"
            and sample.labels["alertmanager"] == s.shared.url + "/api/v2/alerts"
        ]
        assert sent, "Prometheus does not know the shared Alertmanager"
        assert sent[0] > 0
        # Each Alertmanager pages once (a real HA pair would gossip and page once in all).
        for alertmanager in (s.direct, s.shared):
            (page,) = pages(s.pagerduty, alertmanager)
            assert page["event_action"] == "trigger"
            assert f"{LOST} in local: blobs are unknown" in page["payload"]["summary"]
        for alertmanager in (s.direct, s.shared):
            assert about_healthy(alertmanager.alerts(active_only=False)) == []
        status, document = s.daemon.get_json("/status")
        assert document["alerts"] == {"alertmanagers": 2, "firing": [EXPECTED]}
        (firing,) = s.daemon.events("alert_firing")
        assert firing["labels"] == EXPECTED
        assert about_healthy(s.prometheus.alerts()) == []

        with capsys.disabled():
            print("\ndetection latency after removing the blob links:")
            for path, seconds in seen.items():
                print(f"  {path}: {seconds:.2f} s")

        seed_images(
            write_config(
                tmp_path,
                {
                    "environments": [{"name": "local", "url": s.registry.url}],
                    "images": [{"repository": LOST, "tag": "v1"}],
                },
                name="repush.yaml",
            ),
            *SEED_SIZES,
            "--repush",
        )
        repushed = time.monotonic()

        def resolved() -> None:
            assert blob_unknown(s.direct.alerts(active_only=False)) == []
            assert blob_unknown(s.shared.alerts(active_only=False)) == []
            assert blob_unknown(s.prometheus.alerts()) == []
            for alertmanager in (s.direct, s.shared):
                actions = [page["event_action"] for page in pages(s.pagerduty, alertmanager)]
                assert actions == ["trigger", "resolve"], actions

        eventually(resolved, timeout=DETECTION_SECONDS, poll=0.05)
        with capsys.disabled():
            print(f"  resolved everywhere {time.monotonic() - repushed:.2f} s after the repush")


def test_a_hanging_alertmanager_never_holds_up_probing(tmp_path: Path) -> None:
    """With an Alertmanager that accepts connections and never answers, the daemon keeps
    pulling while its posts hang, counts each post as a timeout and still reports the alert
    firing."""
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(start_registry(tmp_path / "registry"))
        images = [{"repository": LOST, "tag": "v1"}]
        environments = [{"name": "local", "url": registry.url}]
        seed_images(write_config(tmp_path, {"environments": environments, "images": images}))
        registry.remove_layer_links(LOST)
        # Connections complete in the kernel's backlog and are never accepted: requests hang.
        hanging = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=64))
        port = hanging.getsockname()[1]
        document = daemon_catalog(environments, images)
        document["alerting"] = {
            "alertmanager": {
                "url": f"http://127.0.0.1:{port}",
                "timeout": "2s",
                "resend_interval": "1s",
            }
        }
        (tmp_path / "daemon").mkdir()
        factory = DaemonFactory(tmp_path / "daemon")
        stack.callback(factory.stop_all)
        daemon = factory.start("canary", document)

        def timeouts() -> float:
            found = [
                s.value
                for s in daemon.metrics()
                if s.name == "registry_canary_alert_deliveries_total"
                and s.labels["outcome"] == "timeout"
            ]
            assert found, "no timeout series"
            return found[0]

        first = eventually(lambda: at_least(timeouts(), 1), timeout=DETECTION_SECONDS)
        # The Alertmanager never answers, so every post from here on hangs until its timeout;
        # pulls go on meanwhile, and the posts keep timing out.
        pulls = len(daemon.events("image_probed"))
        eventually(
            lambda: at_least(len(daemon.events("image_probed")), pulls + 3),
            timeout=DETECTION_SECONDS,
        )
        eventually(lambda: at_least(timeouts(), first + 1), timeout=DETECTION_SECONDS)
        status, state = daemon.get_json("/status")
        assert status == 200
        assert state["alerts"]["firing"] == [EXPECTED]
        assert daemon.get("/healthz")[0] == 200


LEGACY = "RegistryCanaryLegacyDataUnreadable"
LEGACY_SUMMARY = "[FIRING] local: previously pushed images are unreadable, fresh pushes work"
# Long enough for a notification that should not come to have come: Alertmanager sends a
# group's changes at most once per group_interval.
QUIET_SECONDS = 3 * TEST_GROUP_INTERVAL_SECONDS


def test_old_data_lost_while_fresh_pushes_work_pages_once_as_legacy_data_unreadable(
    tmp_path: Path,
) -> None:
    """With a control repository that stays writable and every catalog repository's blob links
    gone, the rule pack raises RegistryCanaryLegacyDataUnreadable, which pages once through the
    shipped routing and holds back the per-repository BlobUnknown pages of that environment."""
    repositories = sorted((*HEALTHY, LOST))
    with stack(tmp_path, control="canary-control/fresh") as s:

        def control_verified() -> None:
            found = s.prometheus.values("registry_canary_control_pull_success")
            assert [value for _, value in found] == [1.0]

        eventually(control_verified, timeout=DETECTION_SECONDS)
        for repository in repositories:
            s.registry.remove_layer_links(repository)

        def paged() -> None:
            firing = [a for a in s.prometheus.alerts() if a["state"] == "firing"]
            assert [
                a["labels"]["environment"] for a in firing if a["labels"]["alertname"] == LEGACY
            ] == ["local"]
            summaries = [p["payload"]["summary"] for p in pages(s.pagerduty, s.shared)]
            assert LEGACY_SUMMARY in summaries, summaries

        def direct_paged_every_repository() -> None:
            # "direct" has only the daemon's alerts: one BlobUnknown per repository, no legacy.
            found = pages(s.pagerduty, s.direct)
            assert found, found
            assert found[-1]["payload"]["custom_details"]["num_firing"] == "3", found[-1]

        eventually(paged, timeout=DETECTION_SECONDS, poll=0.1)
        # Both Alertmanagers post to the one receiver: with "direct" settled too, nothing more
        # may come.
        eventually(direct_paged_every_repository, timeout=DETECTION_SECONDS)
        received = s.pagerduty.bodies(PAGERDUTY_PATH)
        received = s.pagerduty.expect_no_more(PAGERDUTY_PATH, len(received), QUIET_SECONDS)
        shared = [p for p in received if p["client_url"].startswith(s.shared.url + "/")]
        assert {p["event_action"] for p in shared} == {"trigger"}, shared
        # One incident for the environment: any earlier trigger (the daemon's BlobUnknown can beat
        # the rule) carries the same dedup key; the legacy one came once, and last.
        assert len({p["dedup_key"] for p in shared}) == 1, shared
        legacy = [p for p in shared if p["payload"]["summary"] == LEGACY_SUMMARY]
        assert legacy == [shared[-1]], shared
        details = shared[-1]["payload"]["custom_details"]
        assert details["num_firing"] == "1", details
        assert details["alerts"].startswith(f"{LEGACY}: "), details
        assert ALERT not in details["alerts"], details

        # Under the legacy page, the daemon's and the rule's per-repository alerts (one per
        # repository in Alertmanager) are inhibited, each naming the legacy alert.
        def inhibited_by_legacy() -> None:
            held = s.shared.alerts(active_only=False)
            sources = [a["fingerprint"] for a in held if a["labels"]["alertname"] == LEGACY]
            assert len(sources) == 1, held
            suppressed = sorted(
                (a["labels"]["repository"], a["status"]["inhibitedBy"])
                for a in held
                if a["labels"]["alertname"] == ALERT and a["status"]["state"] == "suppressed"
            )
            assert suppressed == [(r, sources) for r in repositories], held

        eventually(inhibited_by_legacy, timeout=DETECTION_SECONDS)
