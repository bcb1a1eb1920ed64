"""The shipped Alertmanager example, config/alertmanager/alertmanager.yml: amtool accepts it, it
routes pages to PagerDuty and tickets to the webhook, and a real Alertmanager running it turns an
environment-wide outage into one page per environment, inhibits what that page explains, and
resolves the pages it sent."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alertmanager_fixtures import (
    AMTOOL_BINARY,
    PAGERDUTY_PATH,
    SHIPPED_CONFIG,
    TEST_GROUP_INTERVAL_SECONDS,
    TEST_ROUTING_KEY,
    WEBHOOK_PATH,
    AlertmanagerServer,
    NotificationReceiver,
    alert,
    load_shipped_config,
    require_binary,
    running_alertmanager,
    running_receiver,
    shipped_config_for_test,
)
from tests.daemon_fixtures import eventually

pytestmark = pytest.mark.registry  # promtool and Alertmanager come from `make sysdeps`

PAGERDUTY_RECEIVER = "registry-canary-pagerduty"
TICKET_RECEIVER = "registry-canary-tickets"
RUNBOOK = "https://github.com/registry-canary/registry-canary/blob/main/README.md#"
PROD_REPOSITORIES = [f"canary/repo-{index:02d}" for index in range(30)]
STAGING_REPOSITORIES = ["canary/alpine", "canary/busybox"]
# Long enough for a notification that should not come to have come: Alertmanager sends a
# group's changes at most once per group_interval.
QUIET_SECONDS = 3 * TEST_GROUP_INTERVAL_SECONDS
DELIVERY_SECONDS = 15.0


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary(AMTOOL_BINARY), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def rule_alert(
    alertname: str, summary: str, **labels: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations as config/prometheus/rules.yml gives `alertname`."""
    annotations = {"summary": summary, "runbook_url": RUNBOOK + alertname.lower()}
    return {"alertname": alertname, **labels}, annotations


def blob_unknown(environment: str, repository: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryBlobUnknown",
        f"{repository} in {environment}: blobs are unknown to the registry",
        environment=environment,
        repository=repository,
        severity="page",
    )


def widespread(environment: str, count: int) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryBlobUnknownWidespread",
        f"{environment}: blobs unknown in {count} repositories",
        environment=environment,
        severity="page",
    )


def pull_failing(environment: str, repository: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryPullFailing",
        f"Pulls of {repository}:v1 in {environment} keep failing",
        environment=environment,
        repository=repository,
        tag="v1",
        severity="ticket",
    )


def error_budget_burn(environment: str, severity: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryErrorBudgetBurn",
        f"{environment}: pulls are burning the error budget fast",
        environment=environment,
        severity=severity,
        long_window="1h" if severity == "page" else "3d",
    )


def legacy_data_unreadable(environment: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryLegacyDataUnreadable",
        f"{environment}: previously pushed images are unreadable, fresh pushes work",
        environment=environment,
        severity="page",
    )


def tag_digest_drift(environment: str, repository: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryTagDigestDrift",
        f"{repository}:v1 in {environment} no longer serves its pinned digest",
        environment=environment,
        repository=repository,
        tag="v1",
        severity="ticket",
    )


def published_date_invalid(
    environment: str, repository: str
) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryPublishedDateInvalid",
        f"{repository}:v1 in {environment} has no valid published date",
        environment=environment,
        repository=repository,
        tag="v1",
        source="config",
        severity="ticket",
    )


def budget_insufficient(environment: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryBudgetInsufficient",
        f"{environment}: the full verification budget is too small for the catalog",
        environment=environment,
        job="registry-canary",
        instance="canary:9321",
        severity="ticket",
    )


def full_verification_overdue(environment: str) -> tuple[dict[str, str], dict[str, str]]:
    return rule_alert(
        "RegistryCanaryFullVerificationOverdue",
        f"{environment}: a budgeted layer is overdue for full verification",
        environment=environment,
        job="registry-canary",
        instance="canary:9321",
        severity="ticket",
    )


def legacy_outage() -> list[tuple[dict[str, str], dict[str, str]]]:
    """prod cannot read its old data while fresh pushes verify, so every repository's blobs are
    unknown (Widespread too) and its tickets follow: a pull failing, a date invalid, a tag off
    its pin. staging loses blobs in two repositories without that diagnosis and has a failing
    pull of its own; prod's budget is too small, so a layer is overdue, and staging's is
    overdue without that explanation. Sources of inhibition come first."""
    return [
        legacy_data_unreadable("prod"),
        widespread("prod", len(PROD_REPOSITORIES)),
        *(blob_unknown("prod", repository) for repository in PROD_REPOSITORIES),
        *(blob_unknown("staging", repository) for repository in STAGING_REPOSITORIES),
        pull_failing("prod", PROD_REPOSITORIES[0]),
        published_date_invalid("prod", PROD_REPOSITORIES[1]),
        tag_digest_drift("prod", PROD_REPOSITORIES[2]),
        pull_failing("staging", "y"),
        budget_insufficient("prod"),
        full_verification_overdue("prod"),
        full_verification_overdue("staging"),
    ]


def outage() -> list[tuple[dict[str, str], dict[str, str]]]:
    """prod loses its blobs everywhere, staging in two repositories; prod/x's pulls fail for
    another reason, and prod's first repository also fails its pulls (explained by its page).
    Sources of inhibition come first, as Prometheus evaluates them in the same round."""
    return [
        widespread("prod", len(PROD_REPOSITORIES)),
        *(blob_unknown("prod", repository) for repository in PROD_REPOSITORIES),
        *(blob_unknown("staging", repository) for repository in STAGING_REPOSITORIES),
        pull_failing("prod", "x"),
        pull_failing("prod", PROD_REPOSITORIES[0]),
    ]


def as_alerts(
    pairs: list[tuple[dict[str, str], dict[str, str]]],
    starts_at: datetime,
    ends_at: datetime,
) -> list[dict[str, Any]]:
    return [
        alert(labels, annotations, starts_at=starts_at, ends_at=ends_at)
        for labels, annotations in pairs
    ]


def held(
    alertmanager: AlertmanagerServer, pairs: list[tuple[dict[str, str], dict[str, str]]]
) -> Callable[[dict[str, str]], str]:
    """Post `pairs` as firing alerts, wait until Alertmanager holds them all, and return the
    lookup of an alert's fingerprint by its labels (fingerprints depend on labels alone)."""
    now = datetime.now(UTC)
    alertmanager.post_alerts(as_alerts(pairs, now - timedelta(minutes=1), now + timedelta(hours=1)))

    def everything() -> list[dict[str, Any]]:
        found = alertmanager.alerts(active_only=False)
        assert len(found) == len(pairs), found
        return found

    fingerprints = {
        json.dumps(item["labels"], sort_keys=True): str(item["fingerprint"])
        for item in eventually(everything, timeout=DELIVERY_SECONDS)
    }
    return lambda labels: fingerprints[json.dumps(labels, sort_keys=True)]


def settled_inhibitions(
    alertmanager: AlertmanagerServer, expected: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """Wait until exactly the `expected` alerts are suppressed, each by its listed inhibitors
    (inhibition is applied asynchronously); return their statuses by fingerprint."""

    def settled() -> dict[str, dict[str, Any]]:
        suppressed = {
            item["fingerprint"]: item["status"]
            for item in alertmanager.alerts(active_only=False)
            if item["status"]["state"] == "suppressed"
        }
        assert {key: status["inhibitedBy"] for key, status in suppressed.items()} == expected
        return suppressed

    return eventually(settled, timeout=DELIVERY_SECONDS)


def active(alertmanager: AlertmanagerServer) -> list[tuple[str, str, str | None]]:
    """(alertname, environment, repository) of the alerts Alertmanager would notify, sorted."""
    return sorted(
        (
            item["labels"]["alertname"],
            item["labels"]["environment"],
            item["labels"].get("repository"),
        )
        for item in alertmanager.alerts()
    )


def routes_test(*labels: str) -> list[str]:
    """The receivers `amtool config routes test` picks for an alert with `labels`."""
    done = amtool("config", "routes", "test", f"--config.file={SHIPPED_CONFIG}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().split(",")


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    yield from running_receiver()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: NotificationReceiver) -> Iterator[AlertmanagerServer]:
    config = shipped_config_for_test(receiver.url, tmp_path / "secrets")
    yield from running_alertmanager(tmp_path / "alertmanager", config)


def test_shipped_config_passes_amtool_check_config() -> None:
    """amtool check-config accepts the shipped file as it is, without its secret files."""
    done = amtool("check-config", str(SHIPPED_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_shipped_config_holds_no_secret() -> None:
    """Every PagerDuty receiver reads its routing key from a file; no key is written inline."""
    receivers = load_shipped_config()["receivers"]
    pagerduty = [c for r in receivers for c in r.get("pagerduty_configs") or []]
    assert pagerduty
    for config in pagerduty:
        assert config.get("routing_key_file", "").startswith("/"), config
        assert not {"routing_key", "service_key", "service_key_file"} & config.keys(), config


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            [
                "severity=page",
                "environment=prod",
                "alertname=RegistryCanaryBlobUnknown",
                "repository=x",
            ],
            PAGERDUTY_RECEIVER,
        ),
        (
            ["severity=page", "environment=prod", "alertname=RegistryCanaryBlobUnknownWidespread"],
            PAGERDUTY_RECEIVER,
        ),
        (
            ["severity=page", "environment=prod", "alertname=RegistryCanaryLegacyDataUnreadable"],
            PAGERDUTY_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryControlFailing",
                "job=registry-canary",
                "instance=canary:9321",
            ],
            TICKET_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryTagDigestDrift",
                "repository=x",
                "tag=v1",
            ],
            TICKET_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryBudgetInsufficient",
                "job=registry-canary",
                "instance=canary:9321",
            ],
            TICKET_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryFullVerificationOverdue",
                "job=registry-canary",
                "instance=canary:9321",
            ],
            TICKET_RECEIVER,
        ),
        (
            [
                "severity=page",
                "environment=prod",
                "alertname=RegistryCanaryErrorBudgetBurn",
                "long_window=1h",
            ],
            PAGERDUTY_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryPullFailing",
                "repository=x",
                "tag=v1",
            ],
            TICKET_RECEIVER,
        ),
        (
            [
                "severity=ticket",
                "environment=prod",
                "alertname=RegistryCanaryErrorBudgetBurn",
                "long_window=3d",
            ],
            TICKET_RECEIVER,
        ),
        (
            ["severity=ticket", "alertname=RegistryCanaryDown", "job=registry-canary"],
            TICKET_RECEIVER,
        ),
        (["alertname=SomethingElse", "severity=page"], TICKET_RECEIVER),
    ],
)
def test_routes_pages_to_pagerduty_and_tickets_to_the_webhook(
    labels: list[str], expected: str
) -> None:
    """amtool routes each alert of the pack to exactly one receiver chosen by its severity."""
    assert routes_test(*labels) == [expected]


def test_test_config_changes_only_endpoints_secrets_and_timers(tmp_path: Path) -> None:
    """shipped_config_for_test keeps the shipped routes, grouping and inhibition unchanged."""
    shipped = load_shipped_config()
    rewritten = shipped_config_for_test("http://127.0.0.1:9", tmp_path)

    def strip(document: dict[str, Any]) -> dict[str, Any]:
        document = json.loads(json.dumps(document))
        for receiver in document["receivers"]:
            for config in receiver.get("pagerduty_configs") or []:
                config.pop("url", None)
                config.pop("routing_key_file", None)
            for config in receiver.get("webhook_configs") or []:
                config.pop("url", None)
        stack = [document["route"]]
        while stack:
            route = stack.pop()
            route.pop("group_wait", None)
            route.pop("group_interval", None)
            stack.extend(route.get("routes") or [])
        return document

    assert strip(rewritten) == strip(shipped)
    assert rewritten["route"]["group_interval"] == f"{TEST_GROUP_INTERVAL_SECONDS:g}s"
    # And the result is still a valid Alertmanager config.
    path = tmp_path / "rewritten.yml"
    path.write_text(yaml.safe_dump(rewritten, sort_keys=False))
    done = amtool("check-config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_environment_wide_outage_pages_once_per_environment_and_resolves(
    alertmanager: AlertmanagerServer, receiver: NotificationReceiver
) -> None:
    """30 BlobUnknown plus Widespread in prod and 2 BlobUnknown in staging are one PagerDuty
    trigger per environment, tickets go only to the webhook, and resolving sends one resolve
    per page."""
    # Starting now, as Prometheus's first send of a new alert does: group_wait then applies.
    # (Alertmanager flushes a new group at once for an alert that started more than group_wait
    # ago, possibly before its inhibitor has seen Widespread; see the test below.)
    started = datetime.now(UTC)
    alertmanager.post_alerts(as_alerts(outage(), started, started + timedelta(hours=1)))

    receiver.wait_for(PAGERDUTY_PATH, 2, timeout=DELIVERY_SECONDS)
    triggers = receiver.expect_no_more(PAGERDUTY_PATH, 2, QUIET_SECONDS)
    assert [t["event_action"] for t in triggers] == ["trigger", "trigger"], triggers
    assert all(t["routing_key"] == TEST_ROUTING_KEY for t in triggers), triggers
    by_environment = {t["payload"]["group"]: t for t in triggers}
    assert set(by_environment) == {"prod", "staging"}, triggers
    assert by_environment["prod"]["dedup_key"] != by_environment["staging"]["dedup_key"]

    prod = by_environment["prod"]["payload"]
    assert prod["summary"] == "[FIRING] prod: blobs unknown in 30 repositories", prod
    assert prod["severity"] == "critical"
    details = prod["custom_details"]
    assert details["num_firing"] == "1", details  # the 30 BlobUnknown are inhibited
    assert details["alerts"].startswith("RegistryCanaryBlobUnknownWidespread: "), details
    assert by_environment["prod"]["links"] == [
        {"href": RUNBOOK + "registrycanaryblobunknownwidespread", "text": "Runbook"}
    ]
    staging = by_environment["staging"]["payload"]
    assert staging["summary"].startswith("[FIRING] canary/alpine in staging: "), staging
    assert staging["summary"].endswith("(2 alerts in this group)"), staging
    assert staging["custom_details"]["num_firing"] == "2"
    assert "RegistryCanaryPullFailing" not in json.dumps(triggers)

    # prod/x's ticket reaches the webhook; prod's first repository's one is inhibited.
    [ticket] = receiver.wait_for(WEBHOOK_PATH, 1, timeout=DELIVERY_SECONDS)
    assert ticket["receiver"] == TICKET_RECEIVER
    assert ticket["status"] == "firing"
    assert ticket["groupLabels"] == {
        "environment": "prod",
        "alertname": "RegistryCanaryPullFailing",
    }
    assert [a["labels"]["repository"] for a in ticket["alerts"]] == ["x"], ticket
    receiver.expect_no_more(WEBHOOK_PATH, 1, 0)

    resolved = datetime.now(UTC) - timedelta(seconds=1)  # > started: QUIET_SECONDS passed
    alertmanager.post_alerts(as_alerts(outage(), started, resolved))
    receiver.wait_for(PAGERDUTY_PATH, 4, timeout=DELIVERY_SECONDS)
    resolves = receiver.expect_no_more(PAGERDUTY_PATH, 4, QUIET_SECONDS)[2:]
    assert [r["event_action"] for r in resolves] == ["resolve", "resolve"], resolves
    assert {r["dedup_key"] for r in resolves} == {t["dedup_key"] for t in triggers}
    closed = receiver.wait_for(WEBHOOK_PATH, 2, timeout=DELIVERY_SECONDS)[1]
    assert closed["status"] == "resolved", closed
    # Alertmanager lists resolved alerts even if they were inhibited while firing (an
    # inhibitor that has resolved inhibits nothing), so prod's first repository is here too.
    assert sorted(a["labels"]["repository"] for a in closed["alerts"]) == sorted(
        ["x", PROD_REPOSITORIES[0]]
    ), closed


def test_a_later_widespread_alert_updates_the_same_incident(
    alertmanager: AlertmanagerServer, receiver: NotificationReceiver
) -> None:
    """Repositories paged before Widespread fires are narrowed to it in the same PagerDuty
    incident (same dedup_key), not paged again in a new one."""
    started = datetime.now(UTC)
    until = started + timedelta(hours=1)
    first = [blob_unknown("prod", repository) for repository in PROD_REPOSITORIES[:2]]
    alertmanager.post_alerts(as_alerts(first, started, until))
    [page] = receiver.wait_for(PAGERDUTY_PATH, 1, timeout=DELIVERY_SECONDS)
    assert page["payload"]["custom_details"]["num_firing"] == "2", page

    later = [widespread("prod", 3), blob_unknown("prod", PROD_REPOSITORIES[2])]
    alertmanager.post_alerts(as_alerts(first + later, started, until))

    def narrowed() -> list[Any]:
        pages = receiver.bodies(PAGERDUTY_PATH)
        assert len(pages) > 1, pages
        assert pages[-1]["payload"]["summary"] == "[FIRING] prod: blobs unknown in 3 repositories"
        assert pages[-1]["payload"]["custom_details"]["num_firing"] == "1", pages[-1]
        return pages

    # Usually one update; two if a group_interval tick falls between the post and the
    # inhibitor's reading it, which is still the same incident.
    pages = eventually(narrowed, timeout=DELIVERY_SECONDS)
    pages = receiver.expect_no_more(PAGERDUTY_PATH, len(pages), QUIET_SECONDS)
    assert len(pages) <= 3, pages
    assert {p["event_action"] for p in pages} == {"trigger"}, pages
    assert {p["dedup_key"] for p in pages} == {page["dedup_key"]}, pages


def test_inhibited_alerts_show_as_suppressed(alertmanager: AlertmanagerServer) -> None:
    """Under Widespread the per-repository pages, under a page their repositories' tickets,
    and under a fast burn the slow-burn ticket are suppressed, each naming its inhibitor."""
    fingerprint = held(
        alertmanager,
        [*outage(), error_budget_burn("prod", "page"), error_budget_burn("prod", "ticket")],
    )
    expected_inhibitors = {
        fingerprint(blob_unknown("prod", repository)[0]): [fingerprint(widespread("prod", 30)[0])]
        for repository in PROD_REPOSITORIES
    }
    expected_inhibitors[fingerprint(pull_failing("prod", PROD_REPOSITORIES[0])[0])] = [
        fingerprint(blob_unknown("prod", PROD_REPOSITORIES[0])[0])
    ]
    expected_inhibitors[fingerprint(error_budget_burn("prod", "ticket")[0])] = [
        fingerprint(error_budget_burn("prod", "page")[0])
    ]
    suppressed = settled_inhibitions(alertmanager, expected_inhibitors)
    assert all(not status["silencedBy"] for status in suppressed.values())
    assert active(alertmanager) == [
        ("RegistryCanaryBlobUnknown", "staging", "canary/alpine"),
        ("RegistryCanaryBlobUnknown", "staging", "canary/busybox"),
        ("RegistryCanaryBlobUnknownWidespread", "prod", None),
        ("RegistryCanaryErrorBudgetBurn", "prod", None),
        ("RegistryCanaryPullFailing", "prod", "x"),
    ]


def test_legacy_data_unreadable_pages_once_naming_the_cause(
    alertmanager: AlertmanagerServer, receiver: NotificationReceiver
) -> None:
    """In prod, LegacyDataUnreadable with Widespread and 30 BlobUnknown is one PagerDuty trigger
    titled by the cause, holding that one alert; prod's tickets wait, staging pages and tickets
    as before, and resolving sends the resolve of the same incident."""
    started = datetime.now(UTC)
    alertmanager.post_alerts(as_alerts(legacy_outage(), started, started + timedelta(hours=1)))

    receiver.wait_for(PAGERDUTY_PATH, 2, timeout=DELIVERY_SECONDS)
    triggers = receiver.expect_no_more(PAGERDUTY_PATH, 2, QUIET_SECONDS)
    assert [t["event_action"] for t in triggers] == ["trigger", "trigger"], triggers
    by_environment = {t["payload"]["group"]: t for t in triggers}
    assert set(by_environment) == {"prod", "staging"}, triggers

    prod = by_environment["prod"]["payload"]
    assert prod["summary"] == (
        "[FIRING] prod: previously pushed images are unreadable, fresh pushes work"
    ), prod
    details = prod["custom_details"]
    assert details["num_firing"] == "1", details  # Widespread and the 30 BlobUnknown inhibited
    assert details["alerts"].startswith("RegistryCanaryLegacyDataUnreadable: "), details
    assert "RegistryCanaryBlobUnknown" not in details["alerts"], details
    assert by_environment["prod"]["links"] == [
        {"href": RUNBOOK + "registrycanarylegacydataunreadable", "text": "Runbook"}
    ]
    staging = by_environment["staging"]["payload"]
    assert staging["summary"].startswith("[FIRING] canary/alpine in staging: "), staging
    assert staging["custom_details"]["num_firing"] == "2", staging

    # Of the tickets, staging's pull and overdue layer reach the webhook; prod's are explained
    # by the page or by its insufficient budget, which is a ticket of its own.
    tickets = receiver.wait_for(WEBHOOK_PATH, 3, timeout=DELIVERY_SECONDS)
    tickets = receiver.expect_no_more(WEBHOOK_PATH, 3, QUIET_SECONDS)
    assert sorted(
        (t["groupLabels"]["environment"], t["groupLabels"]["alertname"], len(t["alerts"]))
        for t in tickets
    ) == [
        ("prod", "RegistryCanaryBudgetInsufficient", 1),
        ("staging", "RegistryCanaryFullVerificationOverdue", 1),
        ("staging", "RegistryCanaryPullFailing", 1),
    ], tickets

    resolved = datetime.now(UTC) - timedelta(seconds=1)
    pages = [legacy_data_unreadable("prod"), widespread("prod", len(PROD_REPOSITORIES))]
    pages += [blob_unknown("prod", repository) for repository in PROD_REPOSITORIES]
    alertmanager.post_alerts(as_alerts(pages, started, resolved))
    receiver.wait_for(PAGERDUTY_PATH, 3, timeout=DELIVERY_SECONDS)
    [resolve] = receiver.expect_no_more(PAGERDUTY_PATH, 3, QUIET_SECONDS)[2:]
    assert resolve["event_action"] == "resolve", resolve
    assert resolve["dedup_key"] == by_environment["prod"]["dedup_key"]


def test_legacy_data_unreadable_inhibits_what_it_explains(
    alertmanager: AlertmanagerServer,
) -> None:
    """Under LegacyDataUnreadable, Widespread, every BlobUnknown and the pull, date and pin
    tickets of its environment are suppressed naming it; under an insufficient budget the
    overdue verification of its environment. Nothing of staging is."""
    fingerprint = held(alertmanager, legacy_outage())
    legacy = [fingerprint(legacy_data_unreadable("prod")[0])]
    explained = [
        widespread("prod", len(PROD_REPOSITORIES)),
        *(blob_unknown("prod", repository) for repository in PROD_REPOSITORIES),
        pull_failing("prod", PROD_REPOSITORIES[0]),
        published_date_invalid("prod", PROD_REPOSITORIES[1]),
        tag_digest_drift("prod", PROD_REPOSITORIES[2]),
    ]
    expected_inhibitors = {fingerprint(labels): legacy for labels, _ in explained}
    expected_inhibitors[fingerprint(full_verification_overdue("prod")[0])] = [
        fingerprint(budget_insufficient("prod")[0])
    ]

    settled_inhibitions(alertmanager, expected_inhibitors)
    assert active(alertmanager) == [
        ("RegistryCanaryBlobUnknown", "staging", "canary/alpine"),
        ("RegistryCanaryBlobUnknown", "staging", "canary/busybox"),
        ("RegistryCanaryBudgetInsufficient", "prod", None),
        ("RegistryCanaryFullVerificationOverdue", "staging", None),
        ("RegistryCanaryLegacyDataUnreadable", "prod", None),
        ("RegistryCanaryPullFailing", "staging", "y"),
    ]
