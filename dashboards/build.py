"""Generate the registry-canary Grafana dashboard (dashboards/registry-canary.json).

Run `python dashboards/build.py` after changing this file and commit both; `--check` exits 1 if
the committed JSON differs from what this program generates (the tests run it).

Every query filters by the `environment` (and, where the metric has the label, `repository`)
variables, and every panel and target reads from the `${datasource}` variable: no data source uid
is hard-coded, so the file imports into any Grafana with a Prometheus data source. The uid and
title are fixed: the alert annotations of config/prometheus/rules.yml link to
/d/registry-canary/registry-canary?var-environment=…&var-repository=….
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "registry-canary.json"
UID = "registry-canary"
TITLE = "registry-canary"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid is 24 columns wide

# Label matchers for the template variables; ENTRY for metrics labelled by catalog entry.
ENV = 'environment=~"$environment"'
ENTRY = f'{ENV}, repository=~"$repository"'
ENTRY_LABELS = "environment, repository, tag"
QUANTILES = (0.5, 0.95, 0.99)

Json = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """A Prometheus query; its refId is set by `panel()`."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "format": "table" if table else "time_series",
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def mapping(values: dict[str, tuple[str, str]]) -> Json:
    """A value mapping: raw value → (text, colour)."""
    return {
        "type": "value",
        "options": {
            raw: {"color": color, "index": i, "text": text}
            for i, (raw, (text, color)) in enumerate(values.items())
        },
    }


def override(matcher: str, name: str, **properties: Any) -> Json:
    return {
        "matcher": {"id": matcher, "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties.items()],
    }


def fixed_color(color: str) -> Json:
    return {"fixedColor": color, "mode": "fixed"}


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    w: int,
    h: int,
    description: str,
    unit: str = "short",
    defaults: Json | None = None,
    custom: Json | None = None,
    overrides: list[Json] | None = None,
    options: Json | None = None,
    transformations: list[Json] | None = None,
) -> Json:
    """A panel of `kind` with `targets` (refIds A, B, …); id and position come from `layout()`."""
    field_defaults: Json = {"unit": unit, **(defaults or {})}
    if custom is not None:
        field_defaults["custom"] = custom
    result: Json = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "options": options or {},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "title": title,
        "type": kind,
    }
    if transformations:
        result["transformations"] = transformations
    return result


def row(title: str, *panels: Json) -> tuple[Json, tuple[Json, ...]]:
    """An expanded row and the panels under it."""
    header: Json = {
        "collapsed": False,
        "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": 0},
        "panels": [],
        "title": title,
        "type": "row",
    }
    return header, panels


def layout(rows: list[tuple[Json, tuple[Json, ...]]]) -> list[Json]:
    """Number the panels and place them: each row on its own line, its panels left to right,
    wrapping at the grid's width below the tallest panel of the line."""
    placed: list[Json] = []
    y = 0
    for header, panels in rows:
        header["gridPos"]["y"] = y
        placed.append(header)
        y += 1
        x, line_height = 0, 0
        for item in panels:
            grid = item["gridPos"]
            if x + grid["w"] > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            grid["x"], grid["y"] = x, y
            x += grid["w"]
            line_height = max(line_height, grid["h"])
            placed.append(item)
        y += line_height
    for number, item in enumerate(placed, start=1):
        item["id"] = number
    return placed


def stat(title: str, targets: list[Json], *, description: str, **fields: Any) -> Json:
    options = {
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": "value_and_name",
        "wideLayout": True,
    }
    return panel(
        "stat",
        title,
        targets,
        w=fields.pop("w", 5),
        h=fields.pop("h", 5),
        description=description,
        options=options,
        **fields,
    )


def timeseries(
    title: str, targets: list[Json], *, description: str, stacked: bool = False, **fields: Any
) -> Json:
    custom = {
        "drawStyle": "line",
        "fillOpacity": 60 if stacked else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
    }
    options = {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        targets,
        w=fields.pop("w", 8),
        h=fields.pop("h", 8),
        description=description,
        custom=custom,
        options=options,
        **fields,
    )


def rate(metric: str, matchers: str) -> str:
    return f"rate({metric}{{{matchers}}}[$__rate_interval])"


def quantiles(metric: str, by: str, legend: str) -> list[Json]:
    """p50/p95/p99 of a histogram, per `by` (le is added)."""
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) ({rate(metric + '_bucket', ENV)}))",
            f"p{round(q * 100)} {legend}",
        )
        for q in QUANTILES
    ]


# --- the dashboard -----------------------------------------------------------------------------

RED_BELOW_OBJECTIVE = thresholds((None, "red"), (0.99, "orange"), (0.995, "green"))
OK_FAILING = mapping({"1": ("ok", "green"), "0": ("failing", "red")})


def overview() -> tuple[Json, tuple[Json, ...]]:
    pulls = "registry_canary_image_pulls_total"
    failures = "registry_canary_image_pull_failures_total"
    return row(
        "Overview",
        stat(
            "Pull success (5m)",
            [
                target(
                    f"1 - sum by (environment) (rate({failures}{{{ENTRY}}}[5m]))"
                    f" / sum by (environment) (rate({pulls}{{{ENTRY}}}[5m]))",
                    "{{environment}}",
                )
            ],
            description="The share of the canary's pulls that verified over the last 5 minutes,"
            " per environment (the SLO's good events; the objective is"
            " registry_canary:pull_success:objective).",
            unit="percentunit",
            defaults={"decimals": 2, "min": 0, "max": 1, "thresholds": RED_BELOW_OBJECTIVE},
        ),
        stat(
            "Images failing now",
            [
                target(
                    f"count(min by ({ENTRY_LABELS}) "
                    f"(registry_canary_image_pull_success{{{ENTRY}}}) == 0) or vector(0)",
                    "failing",
                )
            ],
            description="Catalog entries (environment, repository, tag) whose last pull did not"
            " verify. The matrix below says which, where and since when.",
            w=4,
            defaults={"thresholds": thresholds((None, "green"), (1, "red"))},
        ),
        stat(
            "Confirmed blob_unknown (1h)",
            [
                target(
                    "sum by (environment, repository) (increase(registry_canary_blob_fetches_total"
                    f'{{{ENTRY}, outcome="blob_unknown"}}[1h])) > 0',
                    "{{environment}} {{repository}}",
                )
            ],
            description="Blob fetches answered 404 BLOB_UNKNOWN twice (fetch and recheck) in the"
            " last hour, per repository: blobs of pushed images the registry lost. Runbook:"
            " RegistryCanaryBlobUnknown.",
            defaults={
                "decimals": 0,
                "noValue": "0",
                "thresholds": thresholds((None, "green"), (1, "red")),
            },
        ),
        stat(
            "Canary freshness",
            [
                target(
                    "max by (environment) (time() - "
                    f"registry_canary_image_last_probe_timestamp_seconds{{{ENTRY}}})",
                    "{{environment}}",
                )
            ],
            description="Seconds since the oldest last finished pull, per environment. Above"
            " three probe intervals RegistryCanaryStale fires.",
            unit="s",
            defaults={"thresholds": thresholds((None, "green"), (900, "orange"), (1800, "red"))},
        ),
        stat(
            "SLO burn rate (1h)",
            [
                target(
                    "(1 - environment:registry_canary_image_pulls:success_ratio_rate1h"
                    f"{{{ENV}}}) / (1 - scalar(registry_canary:pull_success:objective))",
                    "{{environment}}",
                )
            ],
            description="The pull error ratio over the last hour divided by the error budget"
            " (1 - objective): 1 spends the budget exactly over the SLO period; 14.4 (with the"
            " 5m window) pages as RegistryCanaryErrorBudgetBurn.",
            unit="x",
            defaults={
                "decimals": 1,
                "thresholds": thresholds(
                    (None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")
                ),
            },
        ),
    )


TIMELINE_CUSTOM = {
    "fillOpacity": 80,
    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
    "lineWidth": 0,
}
TIMELINE_OPTIONS = {
    "alignValue": "left",
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    "mergeValues": True,
    "rowHeight": 0.9,
    "showValue": "auto",
    "tooltip": {"mode": "single", "sort": "none"},
}


def diagnosis() -> tuple[Json, tuple[Json, ...]]:
    control = "registry_canary_control_pull_success"
    writes = "registry_canary_control_writes_total"
    return row(
        "Diagnosis",
        panel(
            "state-timeline",
            "Diagnosis by environment and signature",
            [
                target(
                    f"max by (environment, signature) (registry_canary_diagnosis{{{ENV}}})",
                    "{{environment}} {{signature}}",
                )
            ],
            w=12,
            h=8,
            description="What the canary makes of its results, one line per environment and"
            " signature, red while it matches. legacy_data_unreadable: the control probe's fresh"
            " image verifies while long-lived images fail with lost data, so metadata or"
            " migration paths, not storage or the network (pages as"
            " RegistryCanaryLegacyDataUnreadable); registry_down: everything fails, the control"
            " too; storage_unreachable: only fetches redirected to storage fail; auth_broken:"
            " only authentication fails.",
            defaults={
                "color": {"mode": "thresholds"},
                "mappings": [mapping({"1": ("matches", "red"), "0": ("no", "green")})],
                "thresholds": thresholds((None, "green"), (1, "red")),
            },
            custom=TIMELINE_CUSTOM,
            options=TIMELINE_OPTIONS,
        ),
        panel(
            "state-timeline",
            "Control probe",
            [target(f"min by (environment) ({control}{{{ENV}}})", "{{environment}}")],
            w=12,
            h=8,
            description="Whether each environment's last control round pushed a fresh image and"
            " pulled it back verified (with several canary replicas, red if any failed). Without"
            " a verifying control the canary cannot tell lost old data from a broken registry."
            " Runbook: RegistryCanaryControlFailing.",
            defaults={
                "color": {"mode": "thresholds"},
                "mappings": [OK_FAILING],
                "thresholds": thresholds((None, "red"), (1, "green")),
            },
            custom=TIMELINE_CUSTOM,
            options=TIMELINE_OPTIONS,
        ),
        timeseries(
            "Control step duration (p95)",
            [
                target(
                    "histogram_quantile(0.95, sum by (le, environment, step) "
                    f"({rate('registry_canary_control_duration_seconds_bucket', ENV)}))",
                    "{{environment}} {{step}}",
                )
            ],
            description="p95 of the push, pull and delete steps of control rounds, per"
            " environment: a slow push or pull of fresh data is the write or read path itself.",
            unit="s",
        ),
        timeseries(
            "Control writes",
            [
                target(
                    f"sum by (environment, operation, outcome) ({rate(writes, ENV)})",
                    "{{environment}} {{operation}} {{outcome}}",
                )
            ],
            description="Requests with which the control probe changed the registry, per"
            " second, by operation and outcome: failed uploads or manifest puts say the push"
            " step is what fails; unsupported deletes are a registry with deletes turned off.",
            stacked=True,
            unit="reqps",
            overrides=[
                override("byRegexp", "/ ok$/", color=fixed_color("green")),
                override("byRegexp", "/ failed$/", color=fixed_color("red")),
            ],
        ),
        panel(
            "table",
            "Tags off their pin",
            [
                target(
                    f"min by ({ENTRY_LABELS}) "
                    f"(registry_canary_tag_digest_matches_pin{{{ENTRY}}}) == 0",
                    instant=True,
                    table=True,
                )
            ],
            w=8,
            h=8,
            description="Catalog tags that serve another manifest than their pinned digest, or"
            " none: the tag was moved or deleted. Empty while every pinned tag serves its pin."
            " Runbook: RegistryCanaryTagDigestDrift.",
            defaults={"noValue": "every pinned tag serves its pin"},
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
            options={"cellHeight": "sm", "showHeader": True},
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True},
                        "indexByName": {"environment": 0, "repository": 1, "tag": 2},
                    },
                },
            ],
        ),
    )


def image_matrix() -> tuple[Json, tuple[Json, ...]]:
    return row(
        "Image pull success",
        panel(
            "state-timeline",
            "Image pull success by environment and image",
            [
                target(
                    f"min by ({ENTRY_LABELS}) (registry_canary_image_pull_success{{{ENTRY}}})",
                    "{{environment}} {{repository}}:{{tag}}",
                )
            ],
            w=WIDTH,
            h=10,
            description="One line per catalog entry: green while its last pull verified, red"
            " from the first pull that did not (with several canary replicas, red if any sees"
            " it). Hover a red span for when it started; /status has the evidence.",
            defaults={
                "color": {"mode": "thresholds"},
                "mappings": [OK_FAILING],
                "thresholds": thresholds((None, "red"), (1, "green")),
            },
            custom=TIMELINE_CUSTOM,
            options=TIMELINE_OPTIONS,
        ),
    )


def fetches() -> tuple[Json, tuple[Json, ...]]:
    blob = "registry_canary_blob_fetches_total"
    manifest = "registry_canary_manifest_fetches_total"
    outcome_colors = [
        override("byName", "ok", color=fixed_color("green")),
        override("byName", "blob_unknown", color=fixed_color("red")),
    ]
    return row(
        "Fetch outcomes",
        timeseries(
            "Blob fetch outcomes",
            [target(f"sum by (outcome) ({rate(blob, ENTRY)})", "{{outcome}}")],
            description="Blob fetches per second by confirmed outcome; blob_unknown (red) is the"
            " registry losing blobs of pushed images.",
            stacked=True,
            unit="reqps",
            overrides=outcome_colors,
        ),
        timeseries(
            "Blob fetch outcomes, config vs layer",
            [target(f"sum by (kind, outcome) ({rate(blob, ENTRY)})", "{{kind}} {{outcome}}")],
            description="As on the left, split by blob kind: a lost config blob also breaks the"
            " published date of the config source.",
            stacked=True,
            unit="reqps",
            overrides=[
                override("byRegexp", "/ ok$/", color=fixed_color("green")),
                override("byRegexp", "/ blob_unknown$/", color=fixed_color("red")),
            ],
        ),
        timeseries(
            "Manifest fetch outcomes",
            [target(f"sum by (outcome) ({rate(manifest, ENTRY)})", "{{outcome}}")],
            description="Manifest and index fetches per second by confirmed outcome.",
            stacked=True,
            unit="reqps",
            overrides=[
                override("byName", "ok", color=fixed_color("green")),
                override("byName", "manifest_unknown", color=fixed_color("red")),
            ],
        ),
    )


def latency() -> tuple[Json, tuple[Json, ...]]:
    return row(
        "Latency and throughput",
        timeseries(
            "Image pull duration",
            quantiles(
                "registry_canary_image_pull_duration_seconds", "environment", "{{environment}}"
            ),
            description="Whole verified or failed pulls, p50/p95/p99 per environment.",
            unit="s",
        ),
        timeseries(
            "Blob fetch duration",
            quantiles(
                "registry_canary_blob_fetch_duration_seconds",
                "environment, kind",
                "{{environment}} {{kind}}",
            ),
            description="Blob fetches, rechecks included, p50/p95/p99 per environment and kind.",
            unit="s",
        ),
        timeseries(
            "Blob bytes received",
            [
                target(
                    "sum by (environment, kind) "
                    f"({rate('registry_canary_blob_fetch_bytes_total', ENV)})",
                    "{{environment}} {{kind}}",
                )
            ],
            description="Blob bytes received and verified per second.",
            stacked=True,
            unit="Bps",
        ),
    )


def budget() -> tuple[Json, tuple[Json, ...]]:
    verified = "registry_canary_budget_verified_bytes_total"
    return row(
        "Full verification budget",
        timeseries(
            "Verified bytes per hour vs budget",
            [
                target(
                    f"sum by (environment) (increase({verified}{{{ENV}}}[1h]))",
                    "{{environment}} verified (last hour)",
                ),
                target(
                    f"max by (environment) (registry_canary_budget_bytes_per_hour{{{ENV}}})",
                    "{{environment}} budget",
                ),
            ],
            description="Layer bytes downloaded in full and verified over the last hour, against"
            " the configured budget.bytes_per_hour (dashed). Well below the budget while layers"
            " are overdue means the budgeted pulls are failing, not that the budget is small.",
            unit="bytes",
            overrides=[
                override(
                    "byRegexp",
                    "/ budget$/",
                    **{"custom.lineStyle": {"dash": [10, 10], "fill": "dash"}},
                )
            ],
        ),
        stat(
            "Catalog bytes under budget",
            [
                target(
                    f"max by (environment) (registry_canary_budget_catalog_bytes{{{ENV}}})",
                    "{{environment}}",
                )
            ],
            description="Bytes of the distinct layers under blob_check: budget, as measured from"
            " the manifests: what must be verified in full once per full_verify_within.",
            w=4,
            h=8,
            unit="bytes",
            defaults={"color": {"fixedColor": "blue", "mode": "fixed"}},
        ),
        stat(
            "Budget sufficient",
            [
                target(
                    f"min by (environment) (registry_canary_budget_sufficient{{{ENV}}})",
                    "{{environment}}",
                )
            ],
            description="Whether the budget can verify every measured layer within"
            " full_verify_within. Runbook: RegistryCanaryBudgetInsufficient.",
            w=4,
            h=8,
            defaults={
                "mappings": [mapping({"1": ("sufficient", "green"), "0": ("too small", "red")})],
                "thresholds": thresholds((None, "red"), (1, "green")),
            },
        ),
        timeseries(
            "Oldest full verification vs full_verify_within",
            [
                target(
                    "max by (environment) "
                    f"(registry_canary_budget_oldest_full_verification_age_seconds{{{ENV}}})",
                    "{{environment}} oldest",
                ),
                target(
                    "max by (environment) "
                    f"(registry_canary_budget_full_verify_within_seconds{{{ENV}}})",
                    "{{environment}} full_verify_within",
                ),
            ],
            description="Age of the oldest full verification among the budgeted layers (a layer"
            " never verified counts from when it was first seen), against full_verify_within"
            " (dashed). Above it for 30 minutes: RegistryCanaryFullVerificationOverdue.",
            unit="s",
            overrides=[
                override(
                    "byRegexp",
                    "/ full_verify_within$/",
                    **{"custom.lineStyle": {"dash": [10, 10], "fill": "dash"}},
                )
            ],
        ),
    )


def published() -> tuple[Json, tuple[Json, ...]]:
    by = f"{ENTRY_LABELS}, source"
    return row(
        "Published dates",
        panel(
            "table",
            "Published dates",
            [
                target(
                    f"max by ({by}) (registry_canary_tag_published_timestamp_seconds{{{ENTRY}}})"
                    " * 1000",
                    instant=True,
                    table=True,
                ),
                target(
                    f"min by ({by}) (registry_canary_tag_published_date_valid{{{ENTRY}}})",
                    instant=True,
                    table=True,
                ),
            ],
            w=WIDTH,
            h=8,
            description="The date each source reports for each tag, and whether it is valid"
            " (a real date that agrees with the pin and the config blob). An empty date is a"
            " source that could not be read. Runbook: RegistryCanaryPublishedDateInvalid.",
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
            overrides=[
                override("byName", "published", unit="dateTimeAsIso"),
                override(
                    "byName",
                    "valid",
                    mappings=[mapping({"1": ("yes", "green"), "0": ("no", "red")})],
                    **{"custom.cellOptions": {"type": "color-background"}},
                ),
            ],
            options={
                "cellHeight": "sm",
                "showHeader": True,
                "sortBy": [{"desc": False, "displayName": "valid"}],
            },
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "indexByName": {
                            "environment": 0,
                            "repository": 1,
                            "tag": 2,
                            "source": 3,
                            "Value #A": 4,
                            "Value #B": 5,
                        },
                        "renameByName": {"Value #A": "published", "Value #B": "valid"},
                    },
                },
            ],
        ),
    )


def variables() -> list[Json]:
    def entry_variable(name: str, label: str, query: str) -> Json:
        return {
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE,
            "definition": query,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": {"query": query, "refId": "StandardVariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        entry_variable(
            "environment",
            "Environment",
            "label_values(registry_canary_image_pull_success, environment)",
        ),
        entry_variable(
            "repository",
            "Repository",
            'label_values(registry_canary_image_pull_success{environment=~"$environment"},'
            " repository)",
        ),
    ]


def dashboard() -> Json:
    return {
        "annotations": {
            "list": [
                {
                    "datasource": DATASOURCE,
                    "enable": True,
                    "expr": 'ALERTS{alertname=~"RegistryCanary.+", alertstate="firing"}',
                    "hide": False,
                    "iconColor": "red",
                    "name": "Firing RegistryCanary alerts",
                    "step": "60s",
                    "tagKeys": "alertname,severity,environment,repository",
                    "textFormat": "{{alertname}} {{environment}} {{repository}}",
                    "titleFormat": "{{alertname}}",
                    "useValueForTime": False,
                }
            ]
        },
        "description": "Synthetic pulls of long-lived images by registry-canary: which images"
        " fail, where and since when, the canary's diagnosis and control probe, blob fetch"
        " outcomes, latency, the full verification budget and published dates.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(
            [overview(), diagnosis(), image_matrix(), fetches(), latency(), budget(), published()]
        ),
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["registry-canary"],
        "templating": {"list": variables()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": TITLE,
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if {OUTPUT.name} differs from what this program generates",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            print(
                f"{OUTPUT} is out of date: run `python dashboards/build.py` and commit it",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
