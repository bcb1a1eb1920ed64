"""How `probe` shows results: a table for people, JSON for machines, progress on a terminal."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from canary.results import BlobResult, ImageResult, ManifestResult, PublishedStatus

Key = tuple[str, str, str]
# How many pulls each (environment, repository, tag) took under `probe --wait-until-healthy`.
Attempts = Mapping[Key, int]


def render_json(results: Sequence[ImageResult], attempts: Attempts | None = None) -> str:
    documents = []
    for result in results:
        document = result.to_dict()
        if attempts is not None:
            document["attempts"] = attempts.get(result.key, 1)
        documents.append(document)
    return json.dumps(documents, indent=2)


def _cells(result: ImageResult, attempts: Attempts | None, referrers: bool) -> list[str]:
    top = result.manifests[0] if result.manifests else None
    blobs = f"{result.verified_blobs}/{len(result.blobs)}"
    if result.skipped:
        blobs += f" +{len(result.skipped)} skipped"
    cells = [
        result.environment,
        f"{result.repository}:{result.tag}",
        "ok" if result.ok else f"FAIL {result.outcome}",
        str(top.outcome) if top else "-",
        blobs,
        _dates(result),
        f"{result.duration_seconds:.2f}s",
    ]
    if referrers:
        cells.insert(5, referrer_summary(result))
    if attempts is not None:
        cells.append(str(attempts.get(result.key, 1)))
    return cells


def referrer_summary(result: ImageResult) -> str:
    """How many referrers the pull read, and each requirement's state: `2 (signature ok)`."""
    if not result.referrers_checked:
        return "-"
    states = {True: "ok", False: "MISSING", None: "unknown"}
    met = [f"{name} {states[state]}" for name, state in result.requirements]
    read = result.referrers_read
    return f"{read} ({', '.join(met)})" if met else str(read)


def _dates(result: ImageResult) -> str:
    """Each source's date and status; the source is named only when there are several."""
    cells = []
    for published in result.published:
        stamp = published.to_dict()["timestamp"] or "-"
        named = f"{published.source} " if len(result.published) > 1 else ""
        cells.append(f"{named}{stamp} ({published.status})")
    return ", ".join(cells)


_HEADER = ["ENVIRONMENT", "IMAGE", "RESULT", "MANIFEST", "BLOBS OK", "PUBLISHED", "TIME"]


def _what(item: ManifestResult | BlobResult) -> str:
    """Which request: a blob (of which referrer), a manifest, or a referrer (of what type)."""
    if isinstance(item, BlobResult):
        what = f"{item.kind} {item.digest}"
        if item.referrer:
            what += f" of referrer {item.referrer}"
    elif item.is_referrer:
        what = " ".join(filter(None, ["referrer", item.artifact_type, item.digest]))
        if item.found_via is not None:
            what += f" (found via {item.found_via})"
    else:
        what = f"manifest {item.digest}" if item.digest else "manifest"
    if item.platform:
        what += f" ({item.platform})"
    return what


def explain(item: ManifestResult | BlobResult) -> list[str]:
    """Why one manifest or blob request failed: a line saying what and how, then the evidence
    the registry's operators need, each indented by two spaces."""
    what = _what(item)
    evidence = item.evidence
    status = item.status
    if evidence is not None and evidence.status is not None:
        status = evidence.status
    line = f"{what}: {item.outcome} via {item.hop}"
    if status is not None and (evidence is None or f"HTTP {status}" not in evidence.detail):
        line += f", HTTP {status}"
    if item.outcome.is_data_loss:
        first = item.first_outcome or item.outcome
        line += " (confirmed on a second fetch)" if first is item.outcome else f" (first {first})"
    lines = [line]
    if evidence is not None:
        detail = evidence.detail
        if evidence.message and evidence.message not in detail:
            detail += f" [{evidence.message}]"
        lines.append(f"  {detail}")
    request_id = (evidence.request_id if evidence is not None else None) or item.request_id
    if request_id:
        lines.append(f"  request id: {request_id}")
    if evidence is not None and evidence.url:
        lines.append(f"  url: {evidence.url}")
    return lines


def explain_failure(result: ImageResult) -> list[str]:
    """Every failed manifest and blob of a pull explained, or the pull's own evidence when it
    failed before any of them did (a timeout, an unreachable registry)."""
    lines = [line for item in result.failures for line in explain(item)]
    if not result.failures and result.evidence is not None:
        lines.append(result.evidence.detail)
    return lines


def skipped_lines(result: ImageResult) -> list[str]:
    """One line per manifest or layer left out on purpose, with the reason; never a failure."""
    return [
        f"{skipped.kind} {skipped.digest}: {skipped.reason}: {skipped.detail}"
        for skipped in result.skipped
    ]


def published_problems(result: ImageResult) -> list[str]:
    """One line per published-date source whose date is not ok; dates never fail a pull."""
    return [
        f"{published.source}: {published.status}: {published.detail}"
        for published in result.published
        if published.status is not PublishedStatus.OK
    ]


def render_text(results: Sequence[ImageResult], attempts: Attempts | None = None) -> str:
    referrers = any(r.referrers_checked for r in results)
    header = list(_HEADER)
    if referrers:
        header.insert(5, "REFERRERS")
    if attempts is not None:
        header.append("ATTEMPTS")
    rows = [header] + [_cells(r, attempts, referrers) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = [r for r in results if not r.ok]
    for result in failed:
        lines.append("")
        lines.append(f"{result.environment} {result.repository}:{result.tag}: {result.outcome}")
        lines.extend(f"    {line}" for line in explain_failure(result))
    for result in results:
        if result.skipped:
            lines.append("")
            lines.append(f"{result.environment} {result.repository}:{result.tag}: not fetched")
            lines.extend(f"    {line}" for line in skipped_lines(result))
    for result in results:
        wrong = published_problems(result)
        if wrong:
            lines.append("")
            lines.append(f"{result.environment} {result.repository}:{result.tag}: published date")
            lines.extend(f"    {line}" for line in wrong)
    ok = len(results) - len(failed)
    lines.append("")
    lines.append(f"{ok} of {len(results)} image pulls verified, {len(failed)} failed")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) so that readers see the old file or the new one,
    never a part: a temporary file in the same folder, renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes the file private; a report is as readable as any file the user makes.
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Progress:
    """A one-line counter on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, attempt: int = 1) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream
        self.enabled = stream.isatty()
        self.prefix = f"attempt {attempt}: " if attempt > 1 else ""

    def __call__(self, result: ImageResult) -> None:
        self.done += 1
        self.failed += not result.ok
        if self.enabled:
            self.stream.write(
                f"\r{self.prefix}probing: {self.done}/{self.total} done, {self.failed} failed "
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
