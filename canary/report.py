"""How `probe` shows results: a table for people, JSON for machines, progress on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from canary.results import BlobResult, ImageResult, ManifestResult, Outcome, PublishedStatus


def render_json(results: Sequence[ImageResult]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2)


def _short(digest: str | None) -> str:
    if not digest:
        return "-"
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}"


def _cells(result: ImageResult) -> list[str]:
    ok_blobs = sum(b.outcome is Outcome.OK for b in result.blobs)
    top = result.manifests[0] if result.manifests else None
    return [
        result.environment,
        f"{result.repository}:{result.tag}",
        "ok" if result.ok else f"FAIL {result.outcome}",
        str(top.outcome) if top else "-",
        f"{ok_blobs}/{len(result.blobs)}",
        _dates(result),
        f"{result.duration_seconds:.2f}s",
    ]


def _dates(result: ImageResult) -> str:
    """Each source's date and status; the source is named only when there are several."""
    cells = []
    for published in result.published:
        stamp = published.to_dict()["timestamp"] or "-"
        named = f"{published.source} " if len(result.published) > 1 else ""
        cells.append(f"{named}{stamp} ({published.status})")
    return ", ".join(cells)


_HEADER = ["ENVIRONMENT", "IMAGE", "RESULT", "MANIFEST", "BLOBS OK", "PUBLISHED", "TIME"]


def _explain(item: ManifestResult | BlobResult) -> str:
    if isinstance(item, BlobResult):
        what = f"{item.kind} {_short(item.digest)}"
        where = f" via {item.hop}"
        first = item.first_outcome
    else:
        what = f"manifest {_short(item.digest)}" if item.digest else "manifest"
        where = ""
        first = item.first_outcome or item.outcome
    if item.platform:
        what += f" ({item.platform})"
    line = f"    {what}: {item.outcome}{where}"
    if item.outcome.is_data_loss:
        line += " (confirmed on a second fetch)" if first is item.outcome else f" (first {first})"
    evidence = item.evidence
    if evidence is not None:
        line += f"\n      {evidence.detail}"
        if evidence.message and evidence.message not in evidence.detail:
            line += f" [{evidence.message}]"
        if evidence.request_id:
            line += f"\n      request id: {evidence.request_id}"
        if evidence.url:
            line += f"\n      url: {evidence.url}"
    return line


def render_text(results: Sequence[ImageResult]) -> str:
    rows = [_HEADER] + [_cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = [r for r in results if not r.ok]
    for result in failed:
        lines.append("")
        lines.append(f"{result.environment} {result.repository}:{result.tag}: {result.outcome}")
        for item in result.failures:
            lines.append(_explain(item))
        if result.evidence and not result.failures:
            lines.append(f"    {result.evidence.detail}")
    for result in results:
        wrong = [p for p in result.published if p.status is not PublishedStatus.OK]
        if wrong:
            lines.append("")
            lines.append(f"{result.environment} {result.repository}:{result.tag}: published date")
            for published in wrong:
                lines.append(f"    {published.source}: {published.status}: {published.detail}")
    ok = len(results) - len(failed)
    lines.append("")
    lines.append(f"{ok} of {len(results)} image pulls verified, {len(failed)} failed")
    return "\n".join(lines) + "\n"


class Progress:
    """A one-line counter on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, result: ImageResult) -> None:
        self.done += 1
        self.failed += not result.ok
        if self.enabled:
            self.stream.write(f"\rprobing: {self.done}/{self.total} done, {self.failed} failed ")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
