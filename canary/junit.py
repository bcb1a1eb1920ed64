"""`probe --format junit`: one JUnit XML test case per pull, for the test reports of CI systems."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime

from canary.report import (
    Attempts,
    explain_failure,
    published_problems,
    referrer_summary,
    skipped_lines,
)
from canary.results import BlobResult, ImageResult, ManifestResult, Outcome

SUITES_NAME = "registry-canary"

# What XML 1.0 cannot carry at all, not even escaped: most C0 controls, lone surrogates,
# U+FFFE and U+FFFF. A registry's error message may hold any of them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _timestamp(moment: datetime) -> str:
    # Ant's format, without a zone, which the strictest readers require; the time is UTC.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _span(results: Sequence[ImageResult]) -> float:
    """Wall time from the first pull's start to the last pull's end, retries included."""
    if not results:
        return 0.0
    start = min(r.started_at for r in results)
    end = max(r.started_at.timestamp() + r.duration_seconds for r in results)
    return end - start.timestamp()


def _count(items: Sequence[ManifestResult | BlobResult], total: int, noun: str) -> str:
    nouns = noun if total == 1 else f"{noun}s"
    outcomes = {item.outcome for item in items}
    confirmed = all(
        item.outcome.is_data_loss and (item.first_outcome or item.outcome) is item.outcome
        for item in items
    )
    if confirmed and len(outcomes) == 1:
        (outcome,) = outcomes
        unknown = outcome in (Outcome.BLOB_UNKNOWN, Outcome.MANIFEST_UNKNOWN)
        state = "unknown" if unknown else str(outcome)
        if outcome is Outcome.REFERRER_MISSING:
            state = "missing"
        return f"{len(items)} of {total} {nouns} confirmed {state}"
    return f"{len(items)} of {total} {nouns} failed"


def failure_message(result: ImageResult) -> str:
    """The one-line summary a CI system shows beside a failed case: outcome and counts."""
    bad_manifests = [m for m in result.manifests if m.outcome is not Outcome.OK]
    bad_blobs = [b for b in result.blobs if b.outcome is not Outcome.OK]
    parts = []
    if bad_manifests:
        parts.append(_count(bad_manifests, len(result.manifests), "manifest"))
    if bad_blobs:
        parts.append(_count(bad_blobs, len(result.blobs), "blob"))
    bad_referrers = [r for r in result.referrers if r.outcome is not Outcome.OK]
    if bad_referrers:
        parts.append(_count(bad_referrers, len(result.referrers), "referrer"))
    if not parts and result.evidence is not None:
        parts.append(result.evidence.detail)
    return f"{result.outcome}: {', '.join(parts)}" if parts else str(result.outcome)


def _system_out(result: ImageResult, attempts: Attempts | None) -> list[str]:
    """What is worth knowing about a pull but does not decide it: attempts, digests, dates."""
    lines = []
    if attempts is not None:
        lines.append(f"attempts: {attempts.get(result.key, 1)}")
    if result.served_digest is not None:
        lines.append(f"served digest: {result.served_digest}")
    if result.pinned_digest is not None:
        matches = {True: "yes", False: "no", None: "unknown"}[result.matches_pin]
        lines.append(f"pinned digest: {result.pinned_digest} (served matches: {matches})")
    if result.referrers_checked:
        lines.append(f"referrers: {referrer_summary(result)}")
    if result.skipped:
        lines.append("not fetched (does not fail the pull):")
        lines.extend(f"  {line}" for line in skipped_lines(result))
    problems = published_problems(result)
    if problems:
        lines.append("published date (does not fail the pull):")
        lines.extend(f"  {line}" for line in problems)
    return lines


def _testcase(parent: ET.Element, result: ImageResult, attempts: Attempts | None) -> None:
    case = ET.SubElement(
        parent,
        "testcase",
        classname=_clean(f"{SUITES_NAME}.{result.environment}"),
        name=_clean(f"{result.repository}:{result.tag}"),
        time=_seconds(result.duration_seconds),
    )
    if not result.ok:
        failure = ET.SubElement(
            case,
            "failure",
            type=str(result.outcome),
            message=_clean(failure_message(result)),
        )
        failure.text = _clean("\n".join(explain_failure(result)))
    out = _system_out(result, attempts)
    if out:
        ET.SubElement(case, "system-out").text = _clean("\n".join(out))


def render_junit(results: Sequence[ImageResult], attempts: Attempts | None = None) -> str:
    """A JUnit XML document with a suite per environment and a case per image in it."""
    environments: dict[str, list[ImageResult]] = {}
    for result in results:
        environments.setdefault(result.environment, []).append(result)
    failures = sum(not r.ok for r in results)
    root = ET.Element(
        "testsuites",
        name=SUITES_NAME,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=_seconds(_span(results)),
    )
    for environment, members in environments.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_clean(environment),
            tests=str(len(members)),
            failures=str(sum(not r.ok for r in members)),
            errors="0",
            skipped="0",
            time=_seconds(_span(members)),
            timestamp=_timestamp(min(r.started_at for r in members)),
        )
        for result in members:
            _testcase(suite, result, attempts)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
