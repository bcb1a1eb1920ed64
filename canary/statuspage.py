"""The status page at `/`: what the on-call reads when paged, rendered on the server from the same
document as `/status`, with no script and no asset from anywhere else."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from html import escape
from typing import Any

from canary.budget import format_bytes
from canary.results import Outcome

_DATA_LOSS = frozenset(str(o) for o in Outcome if o.is_data_loss)

REFRESH_SECONDS = 10
# Content-Security-Policy: nothing may load or run; the page's own <style> is all it has.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --loss: #82071e;
  --none: #6e7781; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  padding: 12px; max-width: 1200px; }
h1 { font-size: 1.3em; margin: 0 0 4px; }
h2 { font-size: 1.1em; margin: 20px 0 8px; }
h3 { font-size: 1em; margin: 16px 0 6px; overflow-wrap: anywhere; }
.summary { padding: 10px 12px; border-radius: 6px; color: #fff; font-weight: 600; }
.summary.ok { background: var(--ok); } .summary.bad { background: var(--bad); }
.summary.none { background: var(--none); }
.meta { color: var(--none); font-size: .9em; margin: 6px 0 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { font-weight: 600; }
td.cell { min-width: 9em; }
td.ok { background: #dafbe1; border-left: 6px solid var(--ok); }
td.bad { background: #ffebe9; border-left: 6px solid var(--bad); }
td.loss { background: #ffcecb; border-left: 6px solid var(--loss); }
td.none { color: var(--none); }
td.ok, td.bad, td.loss { color: #1f2328; }
.outcome { font-weight: 600; }
.small { font-size: .85em; color: inherit; opacity: .85; }
code { font-size: .9em; overflow-wrap: anywhere; }
ul { margin: 4px 0; padding-left: 20px; }
ul.diagnosis li { background: #ffcecb; color: #1f2328; border-left: 6px solid var(--loss);
  padding: 6px 8px; margin: 4px 0; list-style: none; }
ul.diagnosis { padding-left: 0; }
a.differs { display: inline-block; font-size: .8em; font-weight: 600; color: var(--bad); }
"""


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def ago(stamp: str | None, now: datetime) -> str:
    """How long ago, in the largest unit that reads well: '45 s ago', '3 min ago', '2 h ago'."""
    moment = _parse(stamp)
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def _when(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "never"
    return f'<time datetime="{escape(stamp)}" title="{escape(stamp)}">{ago(stamp, now)}</time>'


def _state(image: dict[str, Any]) -> str:
    """The cell's class: ok, bad, loss (data is gone: what pages), or none (not pulled yet)."""
    if image.get("ok") is None:
        return "none"
    if image["ok"]:
        return "ok"
    return "loss" if str(image.get("outcome")) in _DATA_LOSS else "bad"


def _short(digest: str | None) -> str:
    if not digest:
        return "-"
    algorithm, _, rest = digest.partition(":")
    return f"{algorithm}:{rest[:12]}"


def render(status: dict[str, Any], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    images: list[dict[str, Any]] = status.get("images", [])
    environments = [e["name"] for e in status.get("environments", [])]
    failing = [i for i in images if i.get("ok") is False]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>{'FAILING' if failing else 'ok'} · registry-canary</title>",
        f"<style>{_STYLE}</style></head><body>",
        _header(status, images, failing, now),
        _diagnoses(status.get("environments", [])),
        _matrix(images, environments, now, _differing(status)),
        _differences(status.get("differences", [])),
        _failures(failing, now),
        _dates(images),
        _controls(status.get("environments", []), now),
        _budgets(status.get("environments", [])),
        '<p class="meta">The same data as JSON: <a href="status">/status</a> · '
        '<a href="metrics">/metrics</a> · refreshes every '
        f"{REFRESH_SECONDS} s</p>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _header(
    status: dict[str, Any],
    images: list[dict[str, Any]],
    failing: list[dict[str, Any]],
    now: datetime,
) -> str:
    probed = sum(1 for i in images if i.get("ok") is not None)
    if failing:
        css, text = "bad", f"{len(failing)} of {len(images)} image pulls failing"
    elif probed:
        css, text = "ok", f"all {probed} image pulls verified"
    else:
        css, text = "none", "no pull has finished yet"
    if probed < len(images) and probed:
        text += f" ({len(images) - probed} not pulled yet)"
    alerts = status.get("alerts", {})
    firing = alerts.get("firing", [])
    meta = [
        f"version {escape(str(status.get('version', '?')))}",
        f"started {_when(status.get('started_at'), now)}",
        "ready" if status.get("ready") else "not ready: a first round is still running",
    ]
    for environment in status.get("environments", []):
        if environment.get("backoff_until"):
            meta.append(
                f"{escape(environment['name'])} asked for no requests until "
                f"{escape(environment['backoff_until'])} (429 Retry-After)"
            )
    if alerts.get("alertmanagers"):
        meta.append(f"{len(firing)} alert(s) firing to {alerts['alertmanagers']} Alertmanager(s)")
    return (
        "<h1>registry-canary</h1>"
        f'<div class="summary {css}" role="status">{escape(text)}</div>'
        f'<p class="meta">{" · ".join(meta)}</p>'
    )


def _diagnoses(environments: list[dict[str, Any]]) -> str:
    """What the failures have in common, first: it says where to look."""
    items = []
    for environment in environments:
        diagnosis = environment.get("diagnosis") or {}
        for signature in diagnosis.get("signatures") or []:
            items.append(
                f'<li data-signature="{escape(str(signature.get("signature")))}">'
                f"<strong>{escape(environment['name'])}: "
                f"{escape(str(signature.get('signature')))}</strong> — "
                f"{escape(str(signature.get('explanation', '')))}</li>"
            )
    if not items:
        return ""
    return f'<h2 id="diagnosis">Diagnosis</h2><ul class="diagnosis">{"".join(items)}</ul>'


def _differing(status: dict[str, Any]) -> set[tuple[str, str]]:
    return {(d["repository"], d["tag"]) for d in status.get("differences", [])}


def _differences(differences: list[dict[str, Any]]) -> str:
    """Tags whose environments disagree: a bad deploy in one, not a broken image."""
    if not differences:
        return ""
    rows = []
    for found in differences:
        digests = found.get("served_digests") or {}
        outcomes = found.get("outcomes") or {}
        served = "<br>".join(
            f"{escape(env)}: {escape(str(outcomes.get(env)))} <code>{escape(_short(d))}</code>"
            for env, d in sorted(digests.items())
        )
        rows.append(
            f'<tr data-image="{escape(found["repository"])}:{escape(found["tag"])}">'
            f"<td><code>{escape(found['repository'])}:{escape(found['tag'])}</code></td>"
            f"<td>{escape(', '.join(found.get('healthy_in') or []) or '-')}</td>"
            f"<td>{escape(', '.join(found.get('failing_in') or []) or '-')}</td>"
            f"<td>{served}</td></tr>"
        )
    return (
        '<h2 id="differences">Differs between environments</h2>'
        '<p class="meta">Healthy in one environment and failing in another, or serving another '
        "manifest: look at what differs in the failing environment's deploy first.</p>"
        '<div class="scroll"><table><thead><tr><th>image</th><th>healthy in</th>'
        "<th>failing in</th><th>outcome and served manifest</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _controls(environments: list[dict[str, Any]], now: datetime) -> str:
    rows = []
    for environment in environments:
        control = environment.get("control")
        if not control:
            continue
        ok = control.get("ok")
        state = "ok" if ok else "bad"
        failed = "" if ok else f" at {control.get('failed_step')}"
        deleted = {True: "deleted", False: "not deleted", None: "deletes off"}[
            control.get("deleted")
        ]
        evidence = (control.get("evidence") or {}).get("detail") or ""
        rows.append(
            f"<tr><td>{escape(environment['name'])}</td>"
            f"<td><code>{escape(str(control.get('repository')))}</code></td>"
            f'<td class="{state}"><span class="outcome">{escape(str(control.get("outcome")))}'
            f"</span>{escape(failed)}</td>"
            f"<td>{_when(control.get('finished_at'), now)}</td>"
            f"<td>{escape(deleted)}</td><td>{escape(str(evidence))}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<h2 id="control">Control probe: fresh images</h2><div class="scroll"><table>'
        "<thead><tr><th>environment</th><th>repository</th><th>last round</th><th>when</th>"
        "<th>clean-up</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _budgets(environments: list[dict[str, Any]]) -> str:
    rows = []
    for environment in environments:
        budget = environment.get("budget")
        if not budget:
            continue
        age = budget.get("oldest_full_verification_age_seconds")
        within = budget["full_verify_within_seconds"]
        shortfall = budget.get("shortfall")
        state = "bad" if shortfall or (age is not None and age > within) else "ok"
        rows.append(
            f"<tr><td>{escape(environment['name'])}</td>"
            f"<td>{format_bytes(budget['bytes_per_hour'])}/h</td>"
            f"<td>{budget['layers']} layers, {format_bytes(budget['catalog_bytes'])}</td>"
            f'<td class="{state}">'
            f"{'-' if age is None else f'{age / 3600:.1f} h'} (limit {within / 3600:.1f} h)</td>"
            f"<td>{escape(shortfall or 'enough')}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<h2 id="budget">Full verification budget</h2><div class="scroll"><table>'
        "<thead><tr><th>environment</th><th>budget</th><th>measured</th>"
        "<th>oldest full verification</th><th>can it keep up</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _matrix(
    images: list[dict[str, Any]],
    environments: list[str],
    now: datetime,
    differing: Collection[tuple[str, str]] = (),
) -> str:
    if not images:
        return "<p>The catalog is empty.</p>"
    by_key = {(i["environment"], i["repository"], i["tag"]): i for i in images}
    refs = list(dict.fromkeys((i["repository"], i["tag"]) for i in images))
    head = "".join(f'<th scope="col">{escape(env)}</th>' for env in environments)
    rows = []
    for repository, tag in refs:
        cells = []
        for env in environments:
            image = by_key.get((env, repository, tag))
            cells.append(_cell(image, now) if image else '<td class="cell none">–</td>')
        differs = ""
        if (repository, tag) in differing:
            differs = ' <a class="differs" href="#differences">differs between environments</a>'
        rows.append(
            f'<tr><th scope="row"><code>{escape(repository)}:{escape(tag)}</code>{differs}</th>'
            f"{''.join(cells)}</tr>"
        )
    return (
        '<h2>Images × environments</h2><div class="scroll"><table id="matrix">'
        f'<thead><tr><th scope="col">image</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _cell(image: dict[str, Any], now: datetime) -> str:
    state = _state(image)
    outcome = "not pulled yet" if state == "none" else str(image.get("outcome"))
    suspect = " · rechecking often" if image.get("suspect") else ""
    label = f"{image['environment']} {image['repository']}:{image['tag']}"
    return (
        f'<td class="cell {state}" data-image="{escape(label)}" data-state="{state}">'
        f'<span class="outcome">{escape(outcome)}</span><br>'
        f'<span class="small">probed {_when(image.get("last_probe"), now)}'
        f"{escape(suspect)}<br>{_shapes(image.get('result') or {})}"
        f"last ok {_when(image.get('last_success'), now)}</span></td>"
    )


def _shapes(result: dict[str, Any]) -> str:
    """What a cell adds beyond ok or not: what was left out on purpose, and the referrers."""
    notes = []
    skipped = result.get("skipped") or []
    if skipped:
        reasons = sorted({str(s.get("reason")) for s in skipped})
        notes.append(f"{len(skipped)} skipped ({', '.join(reasons)})")
    if result.get("referrers_checked"):
        read = sum(1 for r in result.get("referrers", []) if r.get("outcome") == "ok")
        states = {True: "ok", False: "missing", None: "unknown"}
        met = [
            f"{name} {states[state]}" for name, state in (result.get("requirements") or {}).items()
        ]
        notes.append(
            f"{read} referrer{'s' if read != 1 else ''}" + (f": {', '.join(met)}" if met else "")
        )
    return "".join(f"{escape(note)}<br>" for note in notes)


def _failures(failing: list[dict[str, Any]], now: datetime) -> str:
    if not failing:
        return ""
    sections = ['<h2 id="failing">Failing images</h2>']
    for image in failing:
        result = image.get("result") or {}
        title = f"{image['environment']} · {image['repository']}:{image['tag']}"
        sections.append(
            f'<section class="failure" data-image="{escape(title)}">'
            f"<h3>{escape(title)}: "
            f'<span class="outcome">{escape(str(image.get("outcome")))}</span></h3>'
            f'<p class="meta">last verified pull {_when(image.get("last_success"), now)}'
            f" · probed {_when(image.get('last_probe'), now)}</p>"
        )
        sections.append(_failed_requests(result))
        evidence = result.get("evidence")
        if evidence:
            sections.append(f"<p>{escape(str(evidence.get('detail', '')))}</p>")
        sections.append(_published_list(image.get("published") or []))
        sections.append("</section>")
    return "\n".join(sections)


def _failed_requests(result: dict[str, Any]) -> str:
    manifests = [m for m in [result.get("manifest"), *result.get("platform_manifests", [])] if m]
    rows = []
    items = [(m, "manifest") for m in manifests if m.get("outcome") != "ok"]
    items += [
        (r, " ".join(filter(None, ["referrer", r.get("artifact_type")])))
        for r in result.get("referrers", [])
        if r.get("outcome") != "ok"
    ]
    items += [(b, str(b.get("kind"))) for b in result.get("blobs", []) if b.get("outcome") != "ok"]
    for item, kind in items:
        evidence = item.get("evidence") or {}
        first = item.get("first_outcome")
        confirmed = "confirmed" if first == item.get("outcome") else f"first {first}"
        rows.append(
            "<tr>"
            f"<td>{escape(kind)}</td>"
            f"<td><code>{escape(_short(item.get('digest')))}</code></td>"
            f'<td class="outcome">{escape(str(item.get("outcome")))}'
            f' <span class="small">({escape(confirmed)})</span></td>'
            f"<td>{escape(str(item.get('hop', '-')))}</td>"
            f"<td>{escape(str(item.get('status') or '-'))}</td>"
            f"<td><code>{escape(str(item.get('request_id') or evidence.get('request_id') or '-'))}"
            "</code></td>"
            f"<td>{escape(str(evidence.get('detail', '')))}</td>"
            "</tr>"
        )
    if not rows:
        return ""
    return (
        '<div class="scroll"><table class="requests"><thead><tr>'
        "<th>what</th><th>digest</th><th>outcome</th><th>hop</th><th>status</th>"
        "<th>request id</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _published_list(published: list[dict[str, Any]]) -> str:
    if not published:
        return ""
    entries = []
    for date in published:
        detail = f" — {escape(str(date['detail']))}" if date.get("detail") else ""
        when = f"{escape(date['timestamp'])} " if date.get("timestamp") else ""
        entries.append(
            f"<li>published date ({escape(str(date.get('source')))}): {when}"
            f'<span class="outcome">{escape(str(date.get("status")))}</span>{detail}</li>'
        )
    return f'<ul class="published">{"".join(entries)}</ul>'


def _dates(images: list[dict[str, Any]]) -> str:
    """Pulls that verify can still show users a wrong date: listed apart, since they don't fail."""
    wrong = [
        (image, date)
        for image in images
        if image.get("ok")
        for date in image.get("published") or []
        if date.get("status") != "ok"
    ]
    if not wrong:
        return ""
    rows = [
        "<tr>"
        f"<td>{escape(image['environment'])}</td>"
        f"<td><code>{escape(image['repository'])}:{escape(image['tag'])}</code></td>"
        f"<td>{escape(str(date.get('source')))}</td>"
        f"<td>{escape(str(date.get('timestamp') or '-'))}</td>"
        f'<td class="outcome">{escape(str(date.get("status")))}</td>'
        f"<td>{escape(str(date.get('detail') or ''))}</td>"
        "</tr>"
        for image, date in wrong
    ]
    return (
        '<h2 id="dates">Published dates that are not right</h2><div class="scroll"><table>'
        "<thead><tr><th>environment</th><th>image</th><th>source</th><th>date</th>"
        "<th>status</th><th>why</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
